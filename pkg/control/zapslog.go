package control

import (
	"context"
	"log/slog"
	"sync/atomic"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// zapLogger is a zap logger (what etcd logs to) that forwards entries at
// min and above to log, so etcd's warnings land in the control plane's log.
// Once quiet is set (we are shutting etcd down), it drops everything below
// fatal: a stopping etcd reports its closed listeners as errors.
func zapLogger(log *slog.Logger, min zapcore.Level, quiet *atomic.Bool) *zap.Logger {
	if quiet == nil {
		quiet = new(atomic.Bool)
	}
	return zap.New(&slogCore{log: log.With("component", "etcd"), min: min, quiet: quiet})
}

// slogCore is a zapcore.Core writing to an slog.Logger.
type slogCore struct {
	log    *slog.Logger
	min    zapcore.Level
	quiet  *atomic.Bool
	fields []zapcore.Field
}

func (c *slogCore) Enabled(l zapcore.Level) bool {
	return l >= c.min && (!c.quiet.Load() || l >= zapcore.DPanicLevel)
}

func (c *slogCore) With(fs []zapcore.Field) zapcore.Core {
	return &slogCore{log: c.log, min: c.min, quiet: c.quiet, fields: append(c.fields[:len(c.fields):len(c.fields)], fs...)}
}

// etcdNoise are warnings every start of the embedded member prints that
// say nothing to an operator here: it listens on loopback only, runs
// without etcd auth (so token signing is moot), and its request limit is
// raised on purpose.
var etcdNoise = map[string]bool{
	"Running http and grpc server on single port. This is not recommended for production.": true,
	"exceeded recommended request limit":                                                   true,
	"simple token is not cryptographically signed":                                         true,
}

func (c *slogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) && !etcdNoise[e.Message] {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *slogCore) Write(e zapcore.Entry, fs []zapcore.Field) error {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range append(c.fields[:len(c.fields):len(c.fields)], fs...) {
		f.AddTo(enc)
	}
	attrs := make([]slog.Attr, 0, len(enc.Fields)+1)
	if e.LoggerName != "" {
		attrs = append(attrs, slog.String("logger", e.LoggerName))
	}
	for k, v := range enc.Fields {
		// etcd's slow-request warning carries the whole request: a big
		// Apply would write megabytes into the log.
		if str, ok := v.(string); ok && len(str) > maxFieldLen {
			v = str[:maxFieldLen] + "…(truncated)"
		}
		attrs = append(attrs, slog.Any(k, v))
	}
	level := slog.LevelInfo
	switch {
	case e.Level >= zapcore.ErrorLevel:
		level = slog.LevelError
	case e.Level == zapcore.WarnLevel:
		level = slog.LevelWarn
	case e.Level <= zapcore.DebugLevel:
		level = slog.LevelDebug
	}
	c.log.LogAttrs(context.Background(), level, e.Message, attrs...)
	return nil
}

func (c *slogCore) Sync() error { return nil }

// maxFieldLen bounds one etcd log field.
const maxFieldLen = 512
