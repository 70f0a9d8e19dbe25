package region

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const linkWait = 10 * time.Second

// linkEcho is a TCP echo server on a kept 127.0.0.1:0 listener.
type linkEcho struct {
	ln       net.Listener
	wg       sync.WaitGroup
	accepted atomic.Int64
	received atomic.Int64
	mu       struct {
		sync.Mutex
		conns []net.Conn
	}
}

func newLinkEcho(t testing.TB) *linkEcho {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &linkEcho{ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			s.mu.Lock()
			s.mu.conns = append(s.mu.conns, c)
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				buf := make([]byte, 32<<10)
				for {
					n, err := c.Read(buf)
					s.received.Add(int64(n))
					if n > 0 {
						if _, werr := c.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						return // EOF included: the deferred Close ends our half too
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for _, c := range s.mu.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *linkEcho) addr() string { return s.ln.Addr().String() }

func newLinkProxy(t testing.TB, target string, delay time.Duration) *LinkProxy {
	t.Helper()
	p, err := NewLinkProxy(context.Background(), LinkConfig{Target: target, Delay: delay})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func linkDial(t testing.TB, p *LinkProxy) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", p.Addr(), linkWait)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// linkRoundTrip writes msg and reads the same number of bytes back.
func linkRoundTrip(t *testing.T, c net.Conn, msg []byte) []byte {
	t.Helper()
	if err := c.SetDeadline(time.Now().Add(linkWait)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	return got
}

func linkEventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(linkWait)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, linkWait)
		}
		<-tick.C
	}
}

// linkExpectClosed waits for the peer to close c (EOF or reset).
func linkExpectClosed(t *testing.T, c net.Conn) {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(linkWait)); err != nil {
		t.Fatal(err)
	}
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection still open after %v", linkWait)
	}
}

func TestLinkProxyPreservesOrder(t *testing.T) {
	t.Parallel()
	for _, delay := range []time.Duration{0, 3 * time.Millisecond} {
		t.Run(fmt.Sprint(delay), func(t *testing.T) {
			t.Parallel()
			echo := newLinkEcho(t)
			p := newLinkProxy(t, echo.addr(), delay)
			c := linkDial(t, p)
			want := make([]byte, 1<<20)
			rng := rand.New(rand.NewPCG(1, 2))
			for i := range want {
				want[i] = byte(rng.Uint32())
			}
			// Write in random pieces while reading concurrently.
			errc := make(chan error, 1)
			go func() {
				rest := want
				for len(rest) > 0 {
					n := min(len(rest), 1+rng.IntN(40<<10))
					if _, err := c.Write(rest[:n]); err != nil {
						errc <- err
						return
					}
					rest = rest[n:]
				}
				errc <- nil
			}()
			if err := c.SetReadDeadline(time.Now().Add(linkWait)); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(want))
			if _, err := io.ReadFull(c, got); err != nil {
				t.Fatal(err)
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatal("bytes reordered or corrupted")
			}
			// The proxy counts a chunk after its write returns, which may
			// be just after the client has read it: wait for the counters.
			linkEventually(t, "metrics count every byte", func() bool {
				m := p.Metrics()
				return m.BytesToTarget == uint64(len(want)) && m.BytesFromTarget == uint64(len(want)) && m.Accepted == 1 && m.Active == 1
			})
		})
	}
}

func TestLinkProxyDelaysEachDirection(t *testing.T) {
	t.Parallel()
	echo := newLinkEcho(t)
	p := newLinkProxy(t, echo.addr(), 0)
	c := linkDial(t, p)
	linkRoundTrip(t, c, []byte("warm"))
	const delay = 40 * time.Millisecond
	p.SetDelay(delay)
	for i := range 3 {
		start := time.Now()
		if got := linkRoundTrip(t, c, []byte{byte(i)}); got[0] != byte(i) {
			t.Fatalf("got %v", got)
		}
		if rtt := time.Since(start); rtt < 2*delay {
			t.Fatalf("round trip %v, want at least twice the one-way delay %v", rtt, delay)
		}
	}
}

// Chunks wait in the delay line together, not one delay after another: all
// of them are read and held before the first is due.
func TestLinkProxyPipelinesChunks(t *testing.T) {
	t.Parallel()
	echo := newLinkEcho(t)
	p := newLinkProxy(t, echo.addr(), time.Hour)
	c := linkDial(t, p)
	const chunks, size = 200, 1000
	var want []byte
	for i := range chunks {
		chunk := bytes.Repeat([]byte{byte(i)}, size)
		want = append(want, chunk...)
		if _, err := c.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	linkEventually(t, "every chunk queued", func() bool { return p.Metrics().QueuedToTarget == chunks*size })
	if n := echo.received.Load(); n != 0 {
		t.Fatalf("target got %d bytes before the delay passed", n)
	}
	p.SetDelay(0) // applies to what is already queued
	if err := c.SetReadDeadline(time.Now().Add(linkWait)); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("chunks reordered")
	}
	// A chunk leaves the queue's count after its write returns, which may
	// be just after the client has read it: wait for the counters.
	linkEventually(t, "queues drained", func() bool {
		m := p.Metrics()
		return m.QueuedToTarget == 0 && m.QueuedFromTarget == 0
	})
}

// A client's half-close is passed on only after its delayed data.
func TestLinkProxyHalfCloseAfterDelayedData(t *testing.T) {
	t.Parallel()
	echo := newLinkEcho(t)
	p := newLinkProxy(t, echo.addr(), 20*time.Millisecond)
	c := linkDial(t, p)
	msg := []byte("last words")
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if err := c.SetReadDeadline(time.Now().Add(linkWait)); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("got %q, want %q then EOF", got, msg)
	}
	linkEventually(t, "connection released", func() bool { return p.Metrics().Active == 0 })
}

func TestLinkProxyCutAndRestore(t *testing.T) {
	t.Parallel()
	echo := newLinkEcho(t)
	p := newLinkProxy(t, echo.addr(), 0)
	c1 := linkDial(t, p)
	linkRoundTrip(t, c1, []byte("before"))

	p.Cut()
	p.Cut() // idempotent
	linkExpectClosed(t, c1)
	if !p.IsCut() {
		t.Fatal("IsCut() = false after Cut")
	}

	// New connections are accepted but go nowhere.
	before := p.Metrics()
	c2 := linkDial(t, p)
	if _, err := c2.Write([]byte("into the void")); err != nil {
		t.Fatal(err)
	}
	linkEventually(t, "connection blackholed", func() bool { return p.Metrics().Blackholed == 1 })
	m := p.Metrics()
	if echo.accepted.Load() != 1 || m.BytesToTarget != before.BytesToTarget || m.Active != 0 || !m.Cut || m.Cuts != 1 {
		t.Fatalf("traffic passed a cut link: echo accepted %d, metrics %+v", echo.accepted.Load(), m)
	}

	p.Restore()
	linkExpectClosed(t, c2) // released so that its client redials promptly
	c3 := linkDial(t, p)
	if got := linkRoundTrip(t, c3, []byte("after")); string(got) != "after" {
		t.Fatalf("got %q", got)
	}
	if p.IsCut() || echo.accepted.Load() != 2 {
		t.Fatalf("after Restore: cut %v, echo accepted %d", p.IsCut(), echo.accepted.Load())
	}
}

func TestLinkProxyTargetDown(t *testing.T) {
	t.Parallel()
	// Port 1 is below the ephemeral range, so no test's listener can own it.
	p := newLinkProxy(t, "127.0.0.1:1", 0)
	c := linkDial(t, p)
	linkExpectClosed(t, c)
	linkEventually(t, "dial error counted", func() bool { return p.Metrics().DialErrors == 1 })
}

func TestLinkProxyCloseWaitsAndClosesConnections(t *testing.T) {
	t.Parallel()
	echo := newLinkEcho(t)
	p, err := NewLinkProxy(context.Background(), LinkConfig{Target: echo.addr(), Delay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	c := linkDial(t, p)
	if _, err := c.Write([]byte("stuck in the delay line")); err != nil {
		t.Fatal(err)
	}
	linkEventually(t, "queued", func() bool { return p.Metrics().QueuedToTarget > 0 })
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	linkExpectClosed(t, c)
	if m := p.Metrics(); m.Active != 0 || m.QueuedToTarget != 0 {
		t.Fatalf("after Close: %+v", m)
	}
	if c, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
		c.Close()
		t.Fatal("a closed proxy accepted a connection")
	}
}

func TestLinkProxyStopsWithContext(t *testing.T) {
	t.Parallel()
	echo := newLinkEcho(t)
	ctx, cancel := context.WithCancel(context.Background())
	p, err := NewLinkProxy(ctx, LinkConfig{Target: echo.addr()})
	if err != nil {
		t.Fatal(err)
	}
	c := linkDial(t, p)
	linkRoundTrip(t, c, []byte("x"))
	cancel()
	linkExpectClosed(t, c)
	if err := p.Close(); err != nil { // waits for every goroutine
		t.Fatal(err)
	}
}

func TestLinkProxyConfigErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  LinkConfig
		want string
	}{
		{"no target", LinkConfig{}, "Target"},
		{"bad target", LinkConfig{Target: "nowhere"}, "Target"},
		{"bad listen", LinkConfig{Target: "127.0.0.1:1", Listen: "x"}, "Listen"},
		{"negative delay", LinkConfig{Target: "127.0.0.1:1", Delay: -1}, "Delay"},
		{"negative dial timeout", LinkConfig{Target: "127.0.0.1:1", DialTimeout: -1}, "DialTimeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := NewLinkProxy(context.Background(), tt.cfg)
			if err == nil {
				p.Close()
				t.Fatal("no error")
			}
			if !errors.Is(err, ErrInvalidLinkConfig) || !bytes.Contains([]byte(err.Error()), []byte(tt.want)) {
				t.Fatalf("err = %v, want ErrInvalidLinkConfig naming %s", err, tt.want)
			}
		})
	}
}

// BenchmarkLinkProxyThroughput streams through a link with a 35 ms one-way
// delay: with the delay line pipelined, throughput is bounded by the copy,
// not by one chunk per delay.
func BenchmarkLinkProxyThroughput(b *testing.B) {
	echo := newLinkEcho(b)
	p := newLinkProxy(b, echo.addr(), 35*time.Millisecond)
	c := linkDial(b, p)
	const total = 16 << 20
	buf := make([]byte, 32<<10)
	b.SetBytes(total)
	b.ResetTimer()
	for range b.N {
		errc := make(chan error, 1)
		go func() {
			for sent := 0; sent < total; sent += len(buf) {
				if _, err := c.Write(buf); err != nil {
					errc <- err
					return
				}
			}
			errc <- nil
		}()
		if _, err := io.CopyN(io.Discard, c, total); err != nil {
			b.Fatal(err)
		}
		if err := <-errc; err != nil {
			b.Fatal(err)
		}
	}
}
