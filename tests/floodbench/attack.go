package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ftpalg/ftpalg/tests/bed"
)

var ftpServer = netip.AddrPortFrom(bed.Server4, 21)

// floodLF sends bare LFs from the attacker host until stop, reading and
// counting the gateway's answers, and reconnects when the gateway ends
// the session.
func floodLF(b *bed.Bed, stop <-chan struct{}, lines *atomic.Int64) error {
	chunk := bytes.Repeat([]byte("\n"), 16<<10)
	for {
		select {
		case <-stop:
			return nil
		default:
		}
		c, err := b.Dial(b.Attacker, ftpServer, 5*time.Second)
		if err != nil {
			return fmt.Errorf("dial: %w", err)
		}
		readDone := make(chan struct{})
		go func() {
			defer close(readDone)
			buf := make([]byte, 64<<10)
			for {
				c.SetReadDeadline(time.Now().Add(30 * time.Second))
				n, err := c.Read(buf)
				lines.Add(int64(bytes.Count(buf[:n], []byte("\n"))))
				if err != nil {
					return
				}
			}
		}()
	write:
		for {
			select {
			case <-stop:
				break write
			case <-readDone:
				break write // the gateway ended the session: again
			default:
			}
			c.SetWriteDeadline(time.Now().Add(time.Second))
			if _, err := c.Write(chunk); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
		}
		c.Close()
		<-readDone
	}
}

// floodNOOP logs in from the attacker host and keeps 16 NOOPs outstanding
// until stop: a client as busy as the server lets it be.
func floodNOOP(b *bed.Bed, stop <-chan struct{}, lines *atomic.Int64) error {
	c, err := b.Dial(b.Attacker, ftpServer, 5*time.Second)
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if code, _, err := bed.ReadReply(r); err != nil || code != 220 {
		return fmt.Errorf("greeting: %d %v", code, err)
	}
	for _, s := range []struct {
		cmd  string
		code int
	}{{"USER anonymous", 331}, {"PASS flood@example.com", 230}} {
		if _, err := io.WriteString(c, s.cmd+"\r\n"); err != nil {
			return err
		}
		if code, text, err := bed.ReadReply(r); err != nil || code != s.code {
			return fmt.Errorf("%s: %d %q %v", s.cmd, code, text, err)
		}
	}
	c.SetDeadline(time.Time{})
	const window = 16
	if _, err := io.WriteString(c, strings.Repeat("NOOP\r\n", window)); err != nil {
		return err
	}
	for {
		select {
		case <-stop:
			return nil
		default:
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		code, text, err := bed.ReadReply(r)
		if err != nil || code != 200 {
			return fmt.Errorf("NOOP: %d %q %v", code, text, err)
		}
		lines.Add(1)
		if _, err := io.WriteString(c, "NOOP\r\n"); err != nil {
			return err
		}
	}
}
