package l4

import (
	"fmt"
	"log/slog"
	"runtime/debug"
)

// Guard runs fn and recovers a panic in it, logging the panic value and the
// stack once at error level, so that one bad connection never kills the
// shared proxy. what names the work in the log (e.g. the connection). A nil
// log falls back to slog.Default().
func Guard(log *slog.Logger, what string, fn func()) {
	defer func() {
		v := recover()
		if v == nil {
			return
		}
		if log == nil {
			log = slog.Default()
		}
		log.Error("panic recovered", "what", what, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
	}()
	fn()
}
