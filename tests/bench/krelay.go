package main

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// kernelRelay is the kernel relay floor: both sockets of a relayed session
// go into a BPF sockhash keyed by socket cookie, and an sk_skb verdict
// program redirects every segment to the other socket's egress inside the
// kernel. User space only accepts, dials and inserts; it sees no byte after
// that. It answers the question whether relaying the control channel in
// the kernel (eBPF sockmap) would beat a user-space relay: both terminate
// the control connection on the gateway, the kernel helper does not.
type kernelRelay struct {
	socks *ebpf.Map // sockhash: cookie -> socket
	peers *ebpf.Map // hash: cookie -> the other socket's cookie
	prog  *ebpf.Program
}

func newKernelRelay(maxSockets uint32) (*kernelRelay, error) {
	socks, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.SockHash, KeySize: 8, ValueSize: 8, MaxEntries: maxSockets})
	if err != nil {
		return nil, fmt.Errorf("create sockhash: %w", err)
	}
	peers, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 8, ValueSize: 8, MaxEntries: maxSockets})
	if err != nil {
		socks.Close()
		return nil, fmt.Errorf("create peer map: %w", err)
	}
	// verdict(skb): peer = peers[cookie(skb)]; redirect to socks[peer],
	// or pass to the socket's own reader if the session is not set up.
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:    ebpf.SkSKB,
		License: "GPL",
		Instructions: asm.Instructions{
			asm.Mov.Reg(asm.R6, asm.R1),
			asm.FnGetSocketCookie.Call(),
			asm.StoreMem(asm.RFP, -8, asm.R0, asm.DWord),
			asm.LoadMapPtr(asm.R1, peers.FD()),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -8),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, "pass"),
			asm.LoadMem(asm.R7, asm.R0, 0, asm.DWord),
			asm.StoreMem(asm.RFP, -16, asm.R7, asm.DWord),
			asm.Mov.Reg(asm.R1, asm.R6),
			asm.LoadMapPtr(asm.R2, socks.FD()),
			asm.Mov.Reg(asm.R3, asm.RFP),
			asm.Add.Imm(asm.R3, -16),
			asm.Mov.Imm(asm.R4, 0), // egress of the peer socket
			asm.FnSkRedirectHash.Call(),
			asm.Return(),
			asm.Mov.Imm(asm.R0, 1).WithSymbol("pass"), // SK_PASS
			asm.Return(),
		},
	})
	if err != nil {
		socks.Close()
		peers.Close()
		return nil, fmt.Errorf("load sk_skb verdict program: %w", err)
	}
	if err := link.RawAttachProgram(link.RawAttachProgramOptions{Target: socks.FD(), Program: prog, Attach: ebpf.AttachSkSKBVerdict}); err != nil {
		socks.Close()
		peers.Close()
		prog.Close()
		return nil, fmt.Errorf("attach verdict program to sockhash: %w", err)
	}
	return &kernelRelay{socks: socks, peers: peers, prog: prog}, nil
}

func socketCookie(c *net.TCPConn) (cookie uint64, fd int, err error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, 0, err
	}
	cerr := rc.Control(func(f uintptr) {
		fd = int(f)
		cookie, err = unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_COOKIE)
	})
	return cookie, fd, errors.Join(cerr, err)
}

// join hands the session's two sockets to the verdict program. Bytes that
// arrived before (the server's greeting) wait in the receive queue and are
// copied by the caller's read loops, as is anything the program passes.
func (k *kernelRelay) join(a, b *net.TCPConn) (leave func(), err error) {
	ca, fa, err := socketCookie(a)
	if err != nil {
		return nil, err
	}
	cb, fb, err := socketCookie(b)
	if err != nil {
		return nil, err
	}
	leave = func() { k.peers.Delete(ca); k.peers.Delete(cb) }
	if err := errors.Join(k.peers.Put(ca, cb), k.peers.Put(cb, ca)); err != nil {
		leave()
		return nil, fmt.Errorf("peer map: %w", err)
	}
	if err := errors.Join(k.socks.Put(ca, uint64(fa)), k.socks.Put(cb, uint64(fb))); err != nil {
		leave()
		return nil, fmt.Errorf("sockhash: %w", err)
	}
	return leave, nil
}

// drained waits until every byte received on from has entered to's send
// queue: redirected segments are sent by a kernel worker, and a shutdown
// before it ran would cut them off (the server's 221 before its FIN).
func drained(from, to *net.TCPConn, limit time.Duration) {
	info := func(c *net.TCPConn) (ti *unix.TCPInfo) {
		if rc, err := c.SyscallConn(); err == nil {
			rc.Control(func(fd uintptr) { ti, _ = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) })
		}
		return ti
	}
	for end := time.Now().Add(limit); time.Now().Before(end); time.Sleep(100 * time.Microsecond) {
		in, out := info(from), info(to)
		if in == nil || out == nil {
			return
		}
		// Bytes queued on to: first transmissions plus not yet sent.
		// The count received includes the FIN's sequence number.
		queued := out.Bytes_sent - out.Bytes_retrans + uint64(out.Notsent_bytes)
		if queued+1 >= in.Bytes_received {
			return
		}
	}
}
