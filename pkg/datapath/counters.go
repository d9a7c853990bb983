package datapath

// CounterNames are the decision counters of bpf/include/hms.h, in index
// order (enum hms_counter).
var CounterNames = []string{
	"redirected",
	"passed",
	"origdst_missed",
	"inbound_steered",
	"inbound_dropped",
	"dns_redirected",
	"sockmap_inserted",
	"msg_redirected",
	"vip_refused",
	"shortcut_on",
	"msg_shortcut",
}
