package hbone

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// mux is one HTTP/2 connection that carries only CONNECT streams, the
// client or the server end. It replaces x/net's Transport and Server,
// whose goroutine hand-offs per frame (a request-body goroutine, a serve
// loop between the frame reader and the handler, a goroutine per write)
// cost more CPU than the TLS itself. Frames and header compression are
// x/net's (http2.Framer, hpack); what is ours is the stream table, flow
// control and the rule that each stream's bytes move in the caller's own
// goroutine: Write frames and flushes directly, Read takes from a buffer
// the connection's one read loop fills.
type mux struct {
	conn   net.Conn
	client bool
	fr     *http2.Framer
	bw     *bufio.Writer
	wdl    time.Time // the connection's write deadline; under wmu

	writeTimeout time.Duration

	// wmu serialises frame writes; the read loop never takes it (its own
	// frames go through ctrl), so a peer that stops reading cannot stall
	// our reading, and no two ends can deadlock on full sockets.
	wmu  sync.Mutex
	henc *hpack.Encoder
	hbuf bytes.Buffer
	// ctrlQ holds control frames (acks, pings, resets, window updates)
	// queued by goroutines that must not block on the socket: the read
	// loop, and anyone holding mu. ctrlLoop writes them in batches.
	ctrlMu   sync.Mutex
	ctrlQ    []func() error
	ctrlWake chan struct{}
	lastRead atomic.Int64 // unix nanoseconds of the last frame read

	// mu guards the fields below and every stream's state.
	mu          sync.Mutex
	streams     map[uint32]*muxStream
	nextID      uint32 // client: next stream id to open
	lastPeerID  uint32 // server: highest stream id the peer opened
	peerMaxFrm  uint32
	peerInitWin int64
	peerMaxStr  uint32
	sendWin     int64     // connection-level window the peer gave us
	recvUnacked int64     // connection-level bytes consumed, not yet acknowledged
	goAway      bool      // no new streams (GOAWAY sent or received, or retired)
	err         error     // set once the connection is dead
	idleSince   time.Time // when the last stream ended; zero while streams are open
	done        chan struct{}

	// onStream (server) runs for each CONNECT the peer opens, in its own
	// goroutine.
	onStream func(st *muxStream, authority string, hdr http.Header)
}

// Flow-control windows we advertise. Streams get 4 MiB, like x/net's
// transport; the connection 32 MiB, which bounds what one connection
// buffers for slow readers.
const (
	streamWindow = 4 << 20
	connWindow   = 32 << 20
	maxFrameSize = 1 << 20
	maxHeaderLen = 64 << 10
	// serverMaxStreams is what a server allows per connection.
	serverMaxStreams = 1000
)

var (
	errMuxClosed   = errors.New("hbone: connection closed")
	errStreamReset = errors.New("hbone: stream reset by peer")
	errGoAway      = errors.New("hbone: connection going away")
	errNotOpened   = errors.New("hbone: stream not opened") // write's fn: nothing was written
)

func newMux(c net.Conn, client bool) *mux {
	m := &mux{
		conn:        c,
		client:      client,
		bw:          bufio.NewWriterSize(c, 64<<10),
		streams:     make(map[uint32]*muxStream),
		nextID:      1,
		peerMaxFrm:  16 << 10,
		peerInitWin: 65535,
		peerMaxStr:  ^uint32(0),
		sendWin:     65535,
		ctrlWake:    make(chan struct{}, 1),
		done:        make(chan struct{}),
		idleSince:   time.Now(),

		writeTimeout: writeTimeout,
	}
	m.lastRead.Store(time.Now().UnixNano())
	m.fr = http2.NewFramer(m.bw, bufio.NewReaderSize(c, 64<<10))
	m.fr.SetMaxReadFrameSize(maxFrameSize)
	m.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	m.fr.MaxHeaderListSize = maxHeaderLen
	m.henc = hpack.NewEncoder(&m.hbuf)
	return m
}

// start sends the preface and our settings, then runs the read loop and
// the control writer. The server reads the client's preface first.
func (m *mux) start() error {
	if !m.client {
		buf := make([]byte, len(http2.ClientPreface))
		m.conn.SetReadDeadline(time.Now().Add(handshakeTimeout))
		if _, err := io.ReadFull(m.conn, buf); err != nil || string(buf) != http2.ClientPreface {
			m.conn.Close()
			return fmt.Errorf("hbone: bad client preface: %v", err)
		}
		m.conn.SetReadDeadline(time.Time{})
	}
	settings := []http2.Setting{
		{ID: http2.SettingInitialWindowSize, Val: streamWindow},
		{ID: http2.SettingMaxFrameSize, Val: maxFrameSize},
		{ID: http2.SettingMaxHeaderListSize, Val: maxHeaderLen},
	}
	if m.client {
		settings = append(settings, http2.Setting{ID: http2.SettingEnablePush, Val: 0})
	} else {
		settings = append(settings, http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: serverMaxStreams})
	}
	err := m.write(func() error {
		if m.client {
			if _, err := m.bw.WriteString(http2.ClientPreface); err != nil {
				return err
			}
		}
		if err := m.fr.WriteSettings(settings...); err != nil {
			return err
		}
		return m.fr.WriteWindowUpdate(0, connWindow-65535)
	})
	if err != nil {
		m.conn.Close()
		return err
	}
	go m.readLoop()
	go m.ctrlLoop()
	return nil
}

// writeTimeout bounds one write to the connection: a peer that stops
// reading (while it may go on sending, so keepalive sees it alive) fails
// the connection instead of holding wmu, and every stream, for good.
var writeTimeout = 30 * time.Second // a var for tests; each mux copies it

// write runs fn, which writes frames, under wmu and flushes.
func (m *mux) write(fn func() error) error {
	m.wmu.Lock()
	defer m.wmu.Unlock()
	// The deadline is moved at most once a second: setting it costs more
	// than a small write.
	if now := time.Now(); now.Add(m.writeTimeout - time.Second).After(m.wdl) {
		m.wdl = now.Add(m.writeTimeout)
		m.conn.SetWriteDeadline(m.wdl)
	}
	if err := fn(); err != nil {
		if !errors.Is(err, errNotOpened) {
			m.fail(err)
		}
		return err
	}
	if err := m.bw.Flush(); err != nil {
		m.fail(err)
		return err
	}
	return nil
}

// ctrlLoop writes queued control frames, all that are waiting under one
// flush.
func (m *mux) ctrlLoop() {
	for {
		select {
		case <-m.ctrlWake:
		case <-m.done:
			return
		}
		m.ctrlMu.Lock()
		q := m.ctrlQ
		m.ctrlQ = nil
		m.ctrlMu.Unlock()
		err := m.write(func() error {
			for _, fn := range q {
				if err := fn(); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return
		}
	}
}

// maxCtrlQueue bounds queued control frames: a peer that lets this many
// pile up is not reading, and loses the connection.
const maxCtrlQueue = 1 << 16

// sendCtrl queues a control frame; it never blocks.
func (m *mux) sendCtrl(fn func() error) {
	m.ctrlMu.Lock()
	full := len(m.ctrlQ) >= maxCtrlQueue
	if !full {
		m.ctrlQ = append(m.ctrlQ, fn)
	}
	m.ctrlMu.Unlock()
	if full {
		go m.fail(errors.New("hbone: peer not reading control frames"))
		return
	}
	select {
	case m.ctrlWake <- struct{}{}:
	default:
	}
}

// fail kills the connection once: every stream sees err.
func (m *mux) fail(err error) {
	m.mu.Lock()
	if m.err != nil {
		m.mu.Unlock()
		return
	}
	m.err = err
	for _, st := range m.streams {
		st.wake()
	}
	close(m.done)
	m.mu.Unlock()
	m.conn.Close()
}

// Close ends the connection and every stream on it.
func (m *mux) Close() error {
	m.fail(errMuxClosed)
	return nil
}

// dead reports whether the connection has failed.
func (m *mux) dead() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.err != nil
}

// canOpen reports whether a new stream may be opened.
func (m *mux) canOpen() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.err == nil && !m.goAway && m.nextID < 1<<31-1
}

// maxStreams is the peer's SETTINGS_MAX_CONCURRENT_STREAMS (0: unlimited).
func (m *mux) maxStreams() uint32 {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.peerMaxStr == ^uint32(0) {
		return 0
	}
	return m.peerMaxStr
}

// noNewStreams stops new streams on the connection; it closes once its
// last stream ends.
func (m *mux) noNewStreams() {
	m.mu.Lock()
	m.goAway = true
	m.mu.Unlock()
}

// drain stops new streams; with none open the connection closes now,
// otherwise when its last stream ends. goaway also tells the peer.
func (m *mux) drain(goaway bool) {
	m.mu.Lock()
	m.goAway = true
	idle := len(m.streams) == 0
	last := m.lastPeerID
	m.mu.Unlock()
	if goaway {
		m.write(func() error { return m.fr.WriteGoAway(last, http2.ErrCodeNo, nil) })
	}
	if idle {
		m.Close()
	}
}

// idleFor is how long the connection has had no stream (0 if it has one).
func (m *mux) idleFor() time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.streams) > 0 || m.idleSince.IsZero() {
		return 0
	}
	return time.Since(m.idleSince)
}

// keepalive closes the connection after idle with no stream, and pings a
// peer silent for readIdle, closing the connection if the ping gets no
// answer in pingTimeout.
func (m *mux) keepalive(idle, readIdle, pingTimeout time.Duration) {
	every := readIdle / 3
	if idle > 0 {
		every = min(every, idle/3)
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	var pinged time.Time
	for {
		select {
		case <-m.done:
			return
		case <-tick.C:
		}
		if idle > 0 && m.idleFor() >= idle {
			m.drain(false)
			return
		}
		silent := time.Since(time.Unix(0, m.lastRead.Load()))
		switch {
		case silent < readIdle:
			pinged = time.Time{}
		case pinged.IsZero():
			pinged = time.Now()
			m.sendCtrl(func() error { return m.fr.WritePing(false, [8]byte{'h', 'b', 'o', 'n', 'e'}) })
		case time.Since(pinged) > pingTimeout:
			m.fail(errors.New("hbone: peer did not answer a ping"))
			return
		}
	}
}

// readLoop reads frames until the connection ends.
func (m *mux) readLoop() {
	for {
		f, err := m.fr.ReadFrame()
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				m.resetStream(se.StreamID, se.Code, errStreamReset)
				continue
			}
			if errors.Is(err, io.EOF) {
				err = errMuxClosed
			}
			m.fail(err)
			return
		}
		m.lastRead.Store(time.Now().UnixNano())
		if err := m.handle(f); err != nil {
			m.fail(err)
			return
		}
	}
}

func (m *mux) handle(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.DataFrame:
		return m.onData(f)
	case *http2.MetaHeadersFrame:
		return m.onHeaders(f)
	case *http2.WindowUpdateFrame:
		return m.onWindowUpdate(f)
	case *http2.RSTStreamFrame:
		m.mu.Lock()
		if st := m.streams[f.StreamID]; st != nil {
			st.reset = errStreamReset
			// A peer that ended its side and then resets (it stopped
			// reading) leaves what it sent readable.
			m.removeLocked(st, !st.recvEOF)
		}
		m.mu.Unlock()
	case *http2.SettingsFrame:
		if f.IsAck() {
			return nil
		}
		if err := m.onSettings(f); err != nil {
			return err
		}
		m.sendCtrl(func() error { return m.fr.WriteSettingsAck() })
	case *http2.PingFrame:
		if !f.IsAck() {
			data := f.Data
			m.sendCtrl(func() error { return m.fr.WritePing(true, data) })
		}
	case *http2.GoAwayFrame:
		m.mu.Lock()
		m.goAway = true
		idle := len(m.streams) == 0
		for id, st := range m.streams {
			if m.client && id > f.LastStreamID { // never processed: fail them now
				st.reset = errGoAway
				m.removeLocked(st, true)
			}
		}
		m.mu.Unlock()
		if idle {
			m.Close()
		}
	}
	return nil // PRIORITY, PUSH_PROMISE (refused by settings), unknown: ignored
}

func (m *mux) onSettings(f *http2.SettingsFrame) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err
		}
		switch s.ID {
		case http2.SettingMaxFrameSize:
			m.peerMaxFrm = s.Val
		case http2.SettingMaxConcurrentStreams:
			m.peerMaxStr = s.Val
		case http2.SettingInitialWindowSize:
			delta := int64(s.Val) - m.peerInitWin
			m.peerInitWin = int64(s.Val)
			for _, st := range m.streams {
				st.sendWin += delta
				st.wake()
			}
		}
		return nil
	})
}

func (m *mux) onWindowUpdate(f *http2.WindowUpdateFrame) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if f.StreamID == 0 {
		m.sendWin += int64(f.Increment)
		for _, st := range m.streams {
			st.wake()
		}
		return nil
	}
	if st := m.streams[f.StreamID]; st != nil {
		st.sendWin += int64(f.Increment)
		st.wake()
	}
	return nil
}

func (m *mux) onData(f *http2.DataFrame) error {
	n := int64(f.Header().Length) // padding counts against the windows too
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.streams[f.StreamID]
	if st == nil || st.recvEOF {
		// A stream we already closed: its bytes still used the
		// connection's window, so give that back.
		m.recvUnacked += n
		m.ackConnLocked()
		return nil
	}
	if int64(st.buf.len())+n > streamWindow+maxFrameSize {
		return fmt.Errorf("hbone: peer overran stream %d's flow-control window", f.StreamID)
	}
	st.buf.write(f.Data())
	st.padding += n - int64(len(f.Data()))
	if f.StreamEnded() {
		st.recvEOF = true
		m.endedLocked(st)
	}
	st.wake()
	return nil
}

// ackConnLocked acknowledges consumed bytes at the connection level once
// they reach a quarter of the window, so updates are few.
func (m *mux) ackConnLocked() {
	if m.recvUnacked < connWindow/4 {
		return
	}
	inc := uint32(m.recvUnacked)
	m.recvUnacked = 0
	m.sendCtrl(func() error { return m.fr.WriteWindowUpdate(0, inc) })
}

func (m *mux) onHeaders(f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	if m.client {
		m.mu.Lock()
		defer m.mu.Unlock()
		st := m.streams[id]
		if st == nil {
			return nil
		}
		if st.status == 0 { // the answer to our CONNECT
			code, _ := strconv.Atoi(f.PseudoValue("status"))
			if code == 0 {
				code = http.StatusBadGateway
			}
			st.status = code
		}
		if f.StreamEnded() {
			st.recvEOF = true
			m.endedLocked(st)
		}
		st.wake()
		return nil
	}
	m.mu.Lock()
	if id%2 == 0 || id <= m.lastPeerID {
		m.mu.Unlock()
		if st := m.stream(id); st != nil && f.StreamEnded() { // trailers
			m.mu.Lock()
			st.recvEOF = true
			m.endedLocked(st)
			st.wake()
			m.mu.Unlock()
			return nil
		}
		return fmt.Errorf("hbone: bad stream id %d", id)
	}
	m.lastPeerID = id
	if m.goAway || len(m.streams) >= serverMaxStreams {
		m.mu.Unlock()
		m.sendCtrl(func() error { return m.fr.WriteRSTStream(id, http2.ErrCodeRefusedStream) })
		return nil
	}
	st := m.newStreamLocked(id)
	st.status = -1 // not answered yet
	if f.StreamEnded() {
		st.recvEOF = true
	}
	m.mu.Unlock()
	hdr := make(http.Header, len(f.Fields))
	for _, hf := range f.RegularFields() {
		k := http.CanonicalHeaderKey(hf.Name)
		hdr[k] = append(hdr[k], hf.Value)
	}
	if f.PseudoValue("method") != http.MethodConnect {
		go st.respond(http.StatusMethodNotAllowed)
		return nil
	}
	go m.onStream(st, f.PseudoValue("authority"), hdr)
	return nil
}

func (m *mux) stream(id uint32) *muxStream {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.streams[id]
}

func (m *mux) newStreamLocked(id uint32) *muxStream {
	st := &muxStream{m: m, id: id, sendWin: m.peerInitWin}
	st.cond.L = &m.mu
	m.streams[id] = st
	m.idleSince = time.Time{}
	return st
}

// endedLocked removes st once both directions have ended; what it
// received stays readable.
func (m *mux) endedLocked(st *muxStream) {
	if st.recvEOF && st.sentEnd {
		m.removeLocked(st, false)
	}
}

// removeLocked forgets st; discard (a reset or a close) also drops what it
// received and nobody will read, giving that back to the connection's
// window.
func (m *mux) removeLocked(st *muxStream, discard bool) {
	if discard {
		m.recvUnacked += int64(st.buf.len()) + st.padding
		st.buf.reset()
		st.padding = 0
		m.ackConnLocked()
	}
	if st.removed {
		return
	}
	st.removed = true
	st.wake()
	delete(m.streams, st.id)
	if len(m.streams) == 0 {
		m.idleSince = time.Now()
		if m.goAway && m.err == nil {
			go m.Close()
		}
	}
}

// resetStream sends RST_STREAM for id and forgets the stream, whose reads
// and writes then fail with err.
func (m *mux) resetStream(id uint32, code http2.ErrCode, err error) {
	m.mu.Lock()
	if st := m.streams[id]; st != nil {
		st.reset = err
		m.removeLocked(st, true)
	}
	m.mu.Unlock()
	m.sendCtrl(func() error { return m.fr.WriteRSTStream(id, code) })
}

// open sends a CONNECT for authority and waits for the answer; it returns
// the stream and the status code (200: the tunnel is up).
func (m *mux) open(done <-chan struct{}, authority string, hdr http.Header) (*muxStream, int, error) {
	var st *muxStream
	err := m.write(func() error {
		// Stream ids must reach the peer in increasing order: take one
		// under wmu, where the HEADERS go out.
		m.mu.Lock()
		if m.err != nil || m.goAway {
			m.mu.Unlock()
			return errNotOpened
		}
		id := m.nextID
		m.nextID += 2
		st = m.newStreamLocked(id)
		m.mu.Unlock()
		m.hbuf.Reset()
		m.henc.WriteField(hpack.HeaderField{Name: ":method", Value: http.MethodConnect})
		m.henc.WriteField(hpack.HeaderField{Name: ":authority", Value: authority})
		for k, vs := range hdr {
			for _, v := range vs {
				m.henc.WriteField(hpack.HeaderField{Name: strings.ToLower(k), Value: v})
			}
		}
		return m.writeHeaderBlock(st.id, false)
	})
	if errors.Is(err, errNotOpened) {
		m.mu.Lock()
		err = m.err
		m.mu.Unlock()
		if err == nil {
			err = errGoAway
		}
	}
	if err != nil {
		return nil, 0, err
	}
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-done:
			m.mu.Lock()
			st.canceled = true
			st.wake()
			m.mu.Unlock()
		case <-stop:
		}
	}()
	m.mu.Lock()
	for st.status == 0 && !st.removed && m.err == nil && !st.canceled {
		st.cond.Wait()
	}
	code, reset, canceled, merr := st.status, st.reset, st.canceled, m.err
	m.mu.Unlock()
	switch {
	case code != 0 && !canceled:
		return st, code, nil
	case canceled:
		st.Close()
		return nil, 0, errors.New("hbone: connect canceled")
	case merr != nil:
		return nil, 0, merr
	default:
		return nil, 0, reset
	}
}

// writeHeaderBlock writes hbuf as HEADERS (+CONTINUATION) on stream id.
func (m *mux) writeHeaderBlock(id uint32, end bool) error {
	block := m.hbuf.Bytes()
	max := int(m.maxFrame())
	first := true
	for first || len(block) > 0 {
		chunk := block[:min(len(block), max)]
		block = block[len(chunk):]
		var err error
		if first {
			err = m.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: chunk, EndHeaders: len(block) == 0, EndStream: end})
		} else {
			err = m.fr.WriteContinuation(id, len(block) == 0, chunk)
		}
		if err != nil {
			return err
		}
		first = false
	}
	return nil
}

func (m *mux) maxFrame() uint32 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.peerMaxFrm
}

// muxStream is one CONNECT stream as a net.Conn, the tunnel's either end.
type muxStream struct {
	m    *mux
	id   uint32
	cond sync.Cond // on m.mu: data, window, status or end

	// Guarded by m.mu.
	buf      recvQueue // received, unread
	padding  int64     // padding received (flow-controlled, never read)
	unacked  int64     // bytes read, not yet acknowledged to the peer
	sendWin  int64
	status   int // client: CONNECT answer; server: -1 until answered
	recvEOF  bool
	sentEnd  bool
	removed  bool
	canceled bool
	reset    error
	rdl, wdl deadline

	local, remote net.Addr
	closeOnce     sync.Once
	onClose       func()
}

func (st *muxStream) wake() { st.cond.Broadcast() }

// respond answers the peer's CONNECT: 200 opens the tunnel; any other code
// ends the stream.
func (st *muxStream) respond(code int) error {
	m := st.m
	end := code != http.StatusOK
	err := m.write(func() error {
		m.hbuf.Reset()
		m.henc.WriteField(hpack.HeaderField{Name: ":status", Value: strconv.Itoa(code)})
		return m.writeHeaderBlock(st.id, end)
	})
	m.mu.Lock()
	st.status = code
	if end {
		st.sentEnd = true
		m.endedLocked(st)
		if !st.removed { // the peer may still send; we will not read
			m.mu.Unlock()
			m.resetStream(st.id, http2.ErrCodeNo, net.ErrClosed)
			return err
		}
	}
	m.mu.Unlock()
	return err
}

// Read returns received bytes; io.EOF once the peer ended its side.
func (st *muxStream) Read(p []byte) (int, error) {
	m := st.m
	m.mu.Lock()
	for st.buf.len() == 0 && !st.recvEOF && !st.removed && m.err == nil {
		if st.rdl.expired {
			m.mu.Unlock()
			return 0, os.ErrDeadlineExceeded
		}
		st.cond.Wait()
	}
	if st.buf.len() == 0 {
		err := io.EOF
		switch {
		case st.recvEOF:
		case st.reset != nil:
			err = st.reset
		case m.err != nil:
			err = m.err
		default:
			err = net.ErrClosed
		}
		m.mu.Unlock()
		return 0, err
	}
	n := st.buf.read(p)
	st.unacked += int64(n) + st.padding
	m.recvUnacked += int64(n) + st.padding
	st.padding = 0
	var streamInc, connInc uint32
	if st.unacked >= streamWindow/4 && !st.recvEOF {
		streamInc, st.unacked = uint32(st.unacked), 0
	}
	if m.recvUnacked >= connWindow/4 {
		connInc, m.recvUnacked = uint32(m.recvUnacked), 0
	}
	m.mu.Unlock()
	if streamInc > 0 || connInc > 0 {
		m.write(func() error {
			if streamInc > 0 {
				if err := m.fr.WriteWindowUpdate(st.id, streamInc); err != nil {
					return err
				}
			}
			if connInc > 0 {
				return m.fr.WriteWindowUpdate(0, connInc)
			}
			return nil
		})
	}
	return n, nil
}

// Write sends p as DATA frames as flow control allows, flushing once per
// call; it blocks while the peer's windows are closed.
func (st *muxStream) Write(p []byte) (int, error) {
	m := st.m
	written := 0
	for len(p) > 0 {
		m.mu.Lock()
		for (st.sendWin <= 0 || m.sendWin <= 0) && !st.sentEnd && !st.removed && m.err == nil {
			if st.wdl.expired {
				m.mu.Unlock()
				return written, os.ErrDeadlineExceeded
			}
			st.cond.Wait()
		}
		if err := st.writeErrLocked(); err != nil {
			m.mu.Unlock()
			return written, err
		}
		n := min(int64(len(p)), st.sendWin, m.sendWin, int64(m.peerMaxFrm)*16)
		st.sendWin -= n
		m.sendWin -= n
		frame := int(m.peerMaxFrm)
		m.mu.Unlock()
		chunk := p[:n]
		err := m.write(func() error {
			for len(chunk) > 0 {
				c := chunk[:min(len(chunk), frame)]
				chunk = chunk[len(c):]
				if err := m.fr.WriteData(st.id, false, c); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return written, err
		}
		written += int(n)
		p = p[n:]
	}
	return written, nil
}

func (st *muxStream) writeErrLocked() error {
	switch {
	case st.sentEnd:
		return io.ErrClosedPipe
	case st.reset != nil:
		return st.reset
	case st.m.err != nil:
		return st.m.err
	case st.removed:
		return net.ErrClosed
	}
	return nil
}

// CloseWrite ends our side (END_STREAM); the peer reads EOF and may go on
// sending.
func (st *muxStream) CloseWrite() error {
	m := st.m
	m.mu.Lock()
	if err := st.writeErrLocked(); err != nil {
		m.mu.Unlock()
		return err
	}
	st.sentEnd = true
	m.mu.Unlock()
	err := m.write(func() error { return m.fr.WriteData(st.id, true, nil) })
	m.mu.Lock()
	m.endedLocked(st)
	m.mu.Unlock()
	return err
}

// Close resets the stream unless both directions already ended.
// Idempotent.
func (st *muxStream) Close() error {
	st.closeOnce.Do(func() {
		m := st.m
		m.mu.Lock()
		st.rdl.stop()
		st.wdl.stop()
		live := !st.removed && m.err == nil
		if !live {
			m.removeLocked(st, true) // drop what nobody will read
			if st.reset == nil {
				st.reset = net.ErrClosed
			}
		}
		m.mu.Unlock()
		if live {
			m.resetStream(st.id, http2.ErrCodeCancel, net.ErrClosed)
		}
		if st.onClose != nil {
			st.onClose()
		}
	})
	return nil
}

// LocalAddr is the local address of the HBONE (TCP) connection.
func (st *muxStream) LocalAddr() net.Addr { return st.local }

// RemoteAddr is the tunnel's far end (client: the CONNECT authority when it
// parses as ip:port); else the HBONE connection's peer.
func (st *muxStream) RemoteAddr() net.Addr { return st.remote }

// SetDeadline sets both deadlines.
func (st *muxStream) SetDeadline(t time.Time) error {
	st.SetReadDeadline(t)
	return st.SetWriteDeadline(t)
}

// SetReadDeadline bounds the wait of Read for data, as on a TCP conn:
// past it, Read fails with os.ErrDeadlineExceeded until it is moved. The
// stream stays usable.
func (st *muxStream) SetReadDeadline(t time.Time) error {
	st.m.mu.Lock()
	defer st.m.mu.Unlock()
	st.rdl.setLocked(st, t)
	return nil
}

// SetWriteDeadline bounds the wait of Write for flow-control window. A
// write already handed to the connection finishes (the connection's own
// write timeout bounds that).
func (st *muxStream) SetWriteDeadline(t time.Time) error {
	st.m.mu.Lock()
	defer st.m.mu.Unlock()
	st.wdl.setLocked(st, t)
	return nil
}

// deadline is one direction's deadline of a stream, guarded by m.mu.
type deadline struct {
	timer   *time.Timer
	gen     uint64 // tells a superseded timer's callback apart
	expired bool
}

// setLocked arms d for t (zero: none); the stream's waiters wake when it
// passes.
func (d *deadline) setLocked(st *muxStream, t time.Time) {
	d.stop()
	d.expired = false
	if t.IsZero() {
		return
	}
	wait := time.Until(t)
	if wait <= 0 {
		d.expired = true
		st.wake()
		return
	}
	gen := d.gen
	d.timer = time.AfterFunc(wait, func() {
		st.m.mu.Lock()
		if d.gen == gen {
			d.expired = true
			st.wake()
		}
		st.m.mu.Unlock()
	})
}

// stop disarms d's timer; under m.mu.
func (d *deadline) stop() {
	d.gen++
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
}

var (
	_ net.Conn    = (*muxStream)(nil)
	_ closeWriter = (*muxStream)(nil)
)
