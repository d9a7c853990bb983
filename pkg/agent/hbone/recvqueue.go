package hbone

import "sync"

// blockSize is the unit of a stream's receive buffer.
const blockSize = 64 << 10

var blockPool = sync.Pool{New: func() any { b := make([]byte, 0, blockSize); return &b }}

// recvQueue is a stream's received, unread bytes in pooled blocks: DATA
// frames are copied in at the tail, Read copies out from the head, and a
// block goes back to the pool once read. Memory follows what is unread
// (bounded by the stream's window), never what went through, and a quiet
// stream holds none.
type recvQueue struct {
	blocks []*[]byte
	off    int // read offset in blocks[0]
	n      int // unread bytes
}

func (q *recvQueue) len() int { return q.n }

func (q *recvQueue) write(p []byte) {
	q.n += len(p)
	for len(p) > 0 {
		if k := len(q.blocks); k > 0 {
			last := q.blocks[k-1]
			if room := cap(*last) - len(*last); room > 0 {
				c := min(room, len(p))
				*last = append(*last, p[:c]...)
				p = p[c:]
				continue
			}
		}
		q.blocks = append(q.blocks, blockPool.Get().(*[]byte))
	}
}

func (q *recvQueue) read(p []byte) int {
	total := 0
	for len(p) > 0 && len(q.blocks) > 0 {
		head := *q.blocks[0]
		c := copy(p, head[q.off:])
		total += c
		p = p[c:]
		q.off += c
		if q.off == len(head) {
			q.releaseHead()
		}
	}
	q.n -= total
	return total
}

func (q *recvQueue) releaseHead() {
	b := q.blocks[0]
	*b = (*b)[:0]
	blockPool.Put(b)
	q.blocks[0] = nil
	q.blocks = q.blocks[1:]
	q.off = 0
}

// reset drops everything unread.
func (q *recvQueue) reset() {
	for len(q.blocks) > 0 {
		q.releaseHead()
	}
	q.blocks, q.n = nil, 0
}
