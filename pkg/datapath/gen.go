package datapath

// One object per hook family; every object declares the shared maps of
// bpf/include/hms.h and the loader hands each of them the same map.
//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -cflags "-O2 -g -Wall -Werror" -target bpfel -go-package datapath -output-dir . connect ../../bpf/connect.c -- -I../../bpf/include
//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -cflags "-O2 -g -Wall -Werror" -target bpfel -go-package datapath -output-dir . getpeername ../../bpf/getpeername.c -- -I../../bpf/include
//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -cflags "-O2 -g -Wall -Werror" -target bpfel -go-package datapath -output-dir . dns ../../bpf/dns.c -- -I../../bpf/include
//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -cflags "-O2 -g -Wall -Werror -mcpu=v3" -target bpfel -go-package datapath -output-dir . sockops ../../bpf/sockops.c -- -I../../bpf/include
//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -cflags "-O2 -g -Wall -Werror -mcpu=v3" -target bpfel -go-package datapath -output-dir . skmsg ../../bpf/skmsg.c -- -I../../bpf/include
//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -cflags "-O2 -g -Wall -Werror" -target bpfel -go-package datapath -output-dir . sklookup ../../bpf/sklookup.c -- -I../../bpf/include
