package control

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// maxWriteAttempts bounds the retries of a VIP-allocating transaction that
// lost a race against another replica.
const maxWriteAttempts = 64

// store is the registry on etcd.
type store struct {
	cli     *clientv3.Client
	cidr    netip.Prefix
	timeout time.Duration
	log     *slog.Logger

	// writeMu serializes this replica's VIP-allocating writes, so its own
	// callers never race each other for one VIP; races between replicas are
	// settled by the create-if-absent compares and a retry.
	writeMu sync.Mutex
}

// opCtx bounds one etcd operation by the request timeout.
func (s *store) opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.timeout)
}

// ownedPut is one object that owns a VIP (a service or an external).
type ownedPut struct {
	key   string                           // full registry key
	vip   string                           // requested VIP; "" = keep or allocate
	value func(vip string) ([]byte, error) // the value to store, with its VIP
}

// ownedResult is the outcome of one ownedPut.
type ownedResult struct {
	vip     string
	created bool
}

// putOwned writes items of one kind in one transaction (all or nothing).
// A new object gets a VIP, claimed by a create-if-absent compare on its vips
// key in the same transaction; an existing one keeps its VIP. A lost race is
// retried on fresh data.
func (s *store) putOwned(ctx context.Context, kind string, items []ownedPut) (res []ownedResult, rev int64, err error) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	err = s.retry(ctx, func(ctx context.Context) (err error) {
		res, rev, err = s.tryPutOwned(ctx, kind, items)
		return err
	})
	return res, rev, err
}

// retry runs a write until it neither loses a race (errConflict) nor meets
// a passing etcd outage (a leader change, a dead member), within one
// request timeout in all. Retrying is safe: every write transaction is
// guarded by compares, so one that did commit is seen on the next read.
func (s *store) retry(ctx context.Context, write func(context.Context) error) error {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	conflicts := 0
	for {
		err := write(ctx)
		switch {
		case err == nil:
			return nil
		case err == errConflict:
			if conflicts++; conflicts == maxWriteAttempts {
				return status.Errorf(codes.Aborted,
					"registry kept changing during %d write attempts; nothing was written; retry", conflicts)
			}
		case status.Code(err) != codes.Unavailable:
			return err
		}
		wait := time.Duration(rand.Int64N(int64(5 * time.Millisecond * time.Duration(min(conflicts, 8)+1))))
		if err != errConflict {
			wait = 100 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			if err == errConflict {
				return storeErr(ctx, ctx.Err(), true)
			}
			return err
		case <-time.After(wait):
		}
	}
}

// ownedView is what a VIP-allocating write is checked against: the
// objects of one kind (key → mod revision) and the VIP owners.
type ownedView struct {
	modRev  map[string]int64  // full key → mod revision
	vipOf   map[string]string // full owner key → VIP
	ownerOf map[string]string // VIP → relative owner key
}

func (s *store) readOwned(ctx context.Context, kind string) (*ownedView, error) {
	octx, cancel := s.opCtx(ctx)
	defer cancel()
	resp, err := s.cli.Txn(octx).Then(
		clientv3.OpGet(kindPrefix(kind), clientv3.WithPrefix(), clientv3.WithKeysOnly()),
		clientv3.OpGet(kindPrefix(kindVIP), clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return nil, storeErr(ctx, err, true)
	}
	v := &ownedView{modRev: map[string]int64{}, vipOf: map[string]string{}, ownerOf: map[string]string{}}
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		v.modRev[string(kv.Key)] = kv.ModRevision
	}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		ip := string(kv.Key[len(kindPrefix(kindVIP)):])
		v.ownerOf[ip] = string(kv.Value)
		v.vipOf[prefix+string(kv.Value)] = ip
	}
	return v, nil
}

func (s *store) tryPutOwned(ctx context.Context, kind string, items []ownedPut) ([]ownedResult, int64, error) {
	view, err := s.readOwned(ctx, kind)
	if err != nil {
		return nil, 0, err
	}
	used := make(map[string]bool, len(view.ownerOf))
	for ip := range view.ownerOf {
		used[ip] = true
	}
	picker := newVIPPicker(s.cidr, used)
	res := make([]ownedResult, len(items))
	var cmps []clientv3.Cmp
	var ops []clientv3.Op
	// Requested VIPs are claimed before any is picked, so a picked VIP
	// never takes one that a later item of the request asked for.
	for pass := range 2 {
		for i, it := range items {
			if (pass == 0) != (it.vip != "") {
				continue
			}
			c, o, r, err := s.planOwned(view, picker, it)
			if err != nil {
				return nil, 0, err
			}
			cmps, ops, res[i] = append(cmps, c...), append(ops, o...), r
		}
	}
	octx, cancel := s.opCtx(ctx)
	defer cancel()
	resp, err := s.cli.Txn(octx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return nil, 0, storeErr(ctx, err, true)
	}
	if !resp.Succeeded {
		return nil, 0, errConflict
	}
	return res, resp.Header.Revision, nil
}

// planOwned returns the compares and puts that write it.
func (s *store) planOwned(view *ownedView, picker *vipPicker, it ownedPut) ([]clientv3.Cmp, []clientv3.Op, ownedResult, error) {
	var cmps []clientv3.Cmp
	var ops []clientv3.Op
	r := ownedResult{vip: view.vipOf[it.key]}
	if rev, ok := view.modRev[it.key]; ok {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(it.key), "=", rev))
		if it.vip != "" && r.vip != "" && it.vip != r.vip {
			return nil, nil, r, status.Errorf(codes.InvalidArgument,
				"%s has vip %s; a vip cannot change (delete and re-create it)", relKey(it.key), r.vip)
		}
	} else {
		r.created = true
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(it.key), "=", 0))
	}
	if r.vip == "" { // new, or an old object that lost its VIP key: allocate
		var err error
		if r.vip, err = s.allocate(view, picker, it); err != nil {
			return nil, nil, r, err
		}
		view.ownerOf[r.vip] = relKey(it.key)
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(vipKey(r.vip)), "=", 0))
		ops = append(ops, clientv3.OpPut(vipKey(r.vip), relKey(it.key)))
	}
	val, err := it.value(r.vip)
	if err != nil {
		return nil, nil, r, status.Errorf(codes.InvalidArgument, "encode %s: %v", relKey(it.key), err)
	}
	return cmps, append(ops, clientv3.OpPut(it.key, string(val))), r, nil
}

func (s *store) allocate(view *ownedView, picker *vipPicker, it ownedPut) (string, error) {
	if it.vip == "" {
		vip, err := picker.pick()
		if err != nil {
			return "", status.Errorf(codes.ResourceExhausted, "%v; nothing was written", err)
		}
		return vip, nil
	}
	switch err := picker.claim(it.vip); {
	case err == errVIPTaken:
		return "", status.Errorf(codes.AlreadyExists, "vip %s is already taken by %s; nothing was written",
			it.vip, view.ownerOf[it.vip])
	case err != nil:
		return "", status.Errorf(codes.InvalidArgument, "%s: %v", relKey(it.key), err)
	}
	return it.vip, nil
}
