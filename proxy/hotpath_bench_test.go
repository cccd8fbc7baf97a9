package proxy

import (
	"net"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/alg"
)

// The per-read costs the relay adds to a plain TCP read, each measured on
// its own: `go test -run '^$' -bench 'Hot' ./proxy/` (docs/performance.md).

// benchRead writes a control line and reads it back with read, so each
// iteration is one write and one read that finds data.
func benchRead(b *testing.B, read func(r *net.TCPConn, buf []byte) (int, error)) {
	w, r := tcpPair(b)
	if err := oobInlineConn(r); err != nil {
		b.Fatal(err)
	}
	line := []byte("RETR f001.bin\r\n")
	buf := make([]byte, readBufSize)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := w.Write(line); err != nil {
			b.Fatal(err)
		}
		for got := 0; got < len(line); {
			n, err := read(r, buf)
			if err != nil {
				b.Fatal(err)
			}
			got += n
		}
	}
}

func BenchmarkHotReadPlain(b *testing.B) {
	benchRead(b, func(r *net.TCPConn, buf []byte) (int, error) { return r.Read(buf) })
}

// BenchmarkHotReadMark is the client pump's read: SIOCATMARK, then read.
func BenchmarkHotReadMark(b *testing.B) {
	var m *markReader
	benchRead(b, func(r *net.TCPConn, buf []byte) (int, error) {
		if m == nil {
			var err error
			if m, err = newMarkReader(r); err != nil {
				return 0, err
			}
		}
		n, _, err := m.read(buf)
		return n, err
	})
}

// BenchmarkHotReadDeadline is the plain read with the pump's idle deadline
// set before each read.
func BenchmarkHotReadDeadline(b *testing.B) {
	benchRead(b, func(r *net.TCPConn, buf []byte) (int, error) {
		r.SetReadDeadline(time.Now().Add(time.Minute))
		return r.Read(buf)
	})
}

// BenchmarkHotReturnPorts is what each read's returnPorts costs when the
// engine freed nothing (the session lock, the hand-over).
func BenchmarkHotReturnPorts(b *testing.B) {
	ss := &session{srv: &Server{pool: newPortPool(50000, 50009)}}
	ss.ports = &sessionPorts{pool: ss.srv.pool}
	b.ReportAllocs()
	for b.Loop() {
		ss.returnPorts(alg.FromClient)
	}
}
