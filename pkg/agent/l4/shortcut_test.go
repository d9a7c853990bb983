package l4

import (
	"bytes"
	"io"
	"slices"
	"sync"
	"testing"
)

// recordingShortcut answers Flip from a script per direction and records
// what the relay reported at each try.
type recordingShortcut struct {
	mu      sync.Mutex
	tries   map[bool][]int64
	onAfter map[bool]int  // the try (1-based) that succeeds; 0 = never
	refuse  map[bool]bool // answer "never again" at once
}

func (s *recordingShortcut) Flip(aToB bool, relayed int64) (on, again bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tries[aToB] = append(s.tries[aToB], relayed)
	if s.refuse[aToB] {
		return false, false, nil
	}
	return len(s.tries[aToB]) == s.onAfter[aToB], true, nil
}

// PipeShortcut offers each direction before its first read and after each
// write with what it wrote so far, stops once a direction is on or
// refused, and still carries (in order) whatever reaches it afterwards.
func TestPipeShortcutOffersEachDirectionUntilTaken(t *testing.T) {
	client, a := tcpPair(t)
	b, server := tcpPair(t)
	sc := &recordingShortcut{tries: map[bool][]int64{}, onAfter: map[bool]int{true: 3}, refuse: map[bool]bool{false: true}}
	done := make(chan error, 1)
	var n Counts
	go func() { done <- PipeShortcut(a, b, &n, sc) }()

	got := make([]byte, 0, 64)
	buf := make([]byte, 64)
	for i, msg := range []string{"one", "two", "three", "late"} {
		if _, err := client.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		k, err := io.ReadFull(server, buf[:len(msg)])
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		got = append(got, buf[:k]...)
	}
	client.CloseWrite()
	if _, err := server.Write([]byte("bye")); err != nil {
		t.Fatal(err)
	}
	server.CloseWrite()
	back, _ := io.ReadAll(client)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if string(got) != "onetwothreelate" || string(back) != "bye" {
		t.Fatalf("relayed %q and %q", got, back)
	}
	sc.mu.Lock()
	defer sc.mu.Unlock()
	// a->b: before the first read (0), after "one" (3), after "two" (6):
	// taken there, so "three" and "late" are carried without more tries.
	if want := []int64{0, 3, 6}; !slices.Equal(sc.tries[true], want) {
		t.Fatalf("a->b tries %v, want %v", sc.tries[true], want)
	}
	if want := []int64{0}; !slices.Equal(sc.tries[false], want) {
		t.Fatalf("b->a tries %v, want %v (refused at once: never again)", sc.tries[false], want)
	}
	if n.AToB.Load() != int64(len(got)) || n.BToA.Load() != 3 {
		t.Fatalf("counts %d/%d", n.AToB.Load(), n.BToA.Load())
	}
}

// A direction that never catches up is tried at most maxFlipTries times.
func TestPipeShortcutTriesAreBounded(t *testing.T) {
	client, a := tcpPair(t)
	b, server := tcpPair(t)
	sc := &recordingShortcut{tries: map[bool][]int64{}, onAfter: map[bool]int{}, refuse: map[bool]bool{}}
	done := make(chan error, 1)
	var n Counts
	go func() { done <- PipeShortcut(a, b, &n, sc) }()
	msg := bytes.Repeat([]byte("x"), 10)
	buf := make([]byte, len(msg))
	for range 2 * maxFlipTries {
		client.Write(msg)
		if _, err := io.ReadFull(server, buf); err != nil {
			t.Fatal(err)
		}
	}
	client.Close()
	server.Close()
	<-done
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if len(sc.tries[true]) != maxFlipTries {
		t.Fatalf("a->b tried %d times, want %d", len(sc.tries[true]), maxFlipTries)
	}
}
