// Package handover lets a new node agent take over the listening sockets and
// state of a running one without refusing a single connection: the old agent
// passes its sockets over a unix connection and keeps serving until the new
// one commits (DESIGN §2 Restart).
//
// Protocol (version 1), over one unix stream connection:
//
//	taker → offerer: frame {"proto":"hms-handover","version":1}
//	offerer → taker: frame {"proto","version","names","kinds","state"},
//	                 then ceil(n/200) one-byte 'F' messages, each carrying
//	                 up to 200 fds (SCM_RIGHTS) in the order of "names"
//	taker → offerer: 'C' (commit), once it rebuilt everything
//
// A frame is a 4-byte big-endian length and that many bytes of JSON. The
// offerer answers in its own version; a taker that does not speak it refuses
// with ErrVersion and hangs up, and the offerer keeps serving.
package handover
