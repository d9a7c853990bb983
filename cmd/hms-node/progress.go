package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// manyDocuments is the size of a manifest whose apply reports progress on
// stderr even when stderr is not a terminal.
const manyDocuments = 50

// progress reports a long operation on stderr while it runs, for people:
// stdout (the ✓ lines scripts parse) is left alone. The zero value, and a
// progress started with show false, prints nothing.
type progress struct {
	w     io.Writer
	tty   bool // redraw one line with \r; else a line every slowEvery
	what  string
	start time.Time
	stop  chan struct{}
	wg    sync.WaitGroup

	mu sync.Mutex // mu guards w's lines against the ticker
}

// progress ticks: a terminal's line is redrawn every tick; a log gets a
// line every slowEvery.
const (
	progressTick = time.Second
	slowEvery    = 10 * time.Second
)

// isTerminal says whether f is a terminal (a character device).
func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// startProgress prints what ("applying 500 services from f.yaml") and keeps
// the time elapsed on show until done. It prints nothing when show is
// false.
func startProgress(w io.Writer, tty, show bool, what string) *progress {
	p := &progress{}
	if !show {
		return p
	}
	p.w, p.tty, p.what, p.start, p.stop = w, tty, what, time.Now(), make(chan struct{})
	p.line(what + "…")
	p.wg.Add(1)
	go p.tick()
	return p
}

func (p *progress) tick() {
	defer p.wg.Done()
	t := time.NewTicker(progressTick)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			el := time.Since(p.start).Round(time.Second)
			if p.tty || el%slowEvery == 0 {
				p.line(fmt.Sprintf("%s… %s", p.what, el))
			}
		}
	}
}

// line writes s, over the previous line on a terminal.
func (p *progress) line(s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s", s)
		return
	}
	fmt.Fprintln(p.w, s)
}

// done stops the ticker and prints the outcome, e.g. "applied 500
// services" (with the time taken), or nothing more when result is "".
func (p *progress) done(result string) {
	if p.stop == nil {
		return
	}
	close(p.stop)
	p.wg.Wait()
	p.stop = nil
	el := time.Since(p.start).Round(time.Millisecond)
	switch {
	case result != "":
		p.line(fmt.Sprintf("%s in %s", result, el))
		if p.tty {
			fmt.Fprintln(p.w)
		}
	case p.tty:
		p.line("") // clear the line: the error follows
	}
}
