package control

import (
	"context"
	"errors"
	"strings"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// errVIPTaken: a requested VIP belongs to someone else.
var errVIPTaken = errors.New("vip is taken")

// errConflict: a write transaction lost a race; it is retried.
var errConflict = errors.New("registry changed during the write")

// storeErr turns an error of an etcd operation made for the caller whose
// context is ctx into a gRPC status with a one-line reason. write says
// whether the operation was a write, so the message can say that nothing
// was written (a failed transaction writes nothing).
func storeErr(ctx context.Context, err error, write bool) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok && !isEtcdErr(err) {
		return err // already ours
	}
	if ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return status.Error(codes.Canceled, "request canceled by the caller")
	}
	reason := oneLine(err.Error())
	switch {
	case errors.Is(err, rpctypes.ErrTooManyOps), errors.Is(err, rpctypes.ErrRequestTooLarge):
		return status.Errorf(codes.InvalidArgument,
			"request too large for the registry store (etcd: %s); nothing was written; split it", reason)
	case errors.Is(err, rpctypes.ErrNoSpace):
		return status.Errorf(codes.ResourceExhausted,
			"registry store is full (etcd: %s); nothing was written", reason)
	}
	msg := "registry store unavailable (etcd: " + reason + "); "
	if write {
		msg += "nothing was written; "
	}
	return status.Error(codes.Unavailable, msg+"retry when etcd is back")
}

// isEtcdErr reports whether err comes from the etcd client or its
// transport (those are gRPC statuses too, but not ours to pass through).
func isEtcdErr(err error) bool {
	var e rpctypes.EtcdError
	if errors.As(err, &e) {
		return true
	}
	s, _ := status.FromError(err)
	switch s.Code() {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled, codes.Unknown, codes.Internal:
		return !strings.HasPrefix(s.Message(), "registry ")
	}
	return strings.HasPrefix(s.Message(), "etcdserver:")
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
