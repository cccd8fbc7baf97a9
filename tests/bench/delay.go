package main

import (
	"encoding/binary"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/ftpalg/ftpalg/tests/bed"
)

// The round trip time of -rtt. With sch_netem, each end of the link between
// the gateway and the server delays what it sends by rtt/2:
//
//	tc qdisc add dev s0 root netem delay RTT/2 limit 100000    (gateway)
//	tc qdisc add dev eth0 root netem delay RTT/2 limit 100000  (server)
//
// A kernel without netem (this bench's Firecracker guest has no modules)
// gets the same delays from NFQUEUE in the server's namespace: every packet
// the server receives or sends on eth0 is queued, and this bench binary
// (-serve-delay, in that namespace) accepts it rtt/2 later, in order.
func addRTT(b *bed.Bed, rtt time.Duration) (how string, stop func(), err error) {
	half := fmt.Sprintf("%dus", (rtt / 2).Microseconds())
	links := []struct{ ns, dev string }{{b.Gateway, "s0"}, {b.Server, "eth0"}}
	netem := func(l struct{ ns, dev string }) error {
		_, err := b.Exec(l.ns, 10*time.Second, "tc", "qdisc", "add", "dev", l.dev, "root", "netem", "delay", half, "limit", "100000")
		return err
	}
	if err := netem(links[0]); err == nil {
		if err := netem(links[1]); err != nil {
			return "", nil, fmt.Errorf("-rtt: netem on the server's eth0: %w", err)
		}
		return fmt.Sprintf("netem delay %s on the gateway's s0 and on the server's eth0", half), func() {}, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return "", nil, err
	}
	p, err := b.Start(b.Server, "delay", nil, exe, "-serve-delay", fmt.Sprintf("%d %s", delayQueue, rtt/2))
	if err != nil {
		return "", nil, err
	}
	stop = func() { p.Signal(unix.SIGKILL, 5*time.Second) }
	if err := b.WaitFor(5*time.Second, func() bool { return strings.Contains(p.Out.String(), "delaying") }, "delay queue"); err != nil {
		stop()
		return "", nil, fmt.Errorf("%w: %s", err, p.Out.String())
	}
	for _, chain := range []string{"INPUT -i eth0", "OUTPUT -o eth0"} {
		rule := fmt.Sprintf("iptables -w -A %s -j NFQUEUE --queue-num %d", chain, delayQueue)
		if _, err := b.Exec(b.Server, 10*time.Second, "sh", "-c", rule); err != nil {
			stop()
			return "", nil, err
		}
	}
	return fmt.Sprintf("no sch_netem in this kernel: NFQUEUE in the server's namespace (INPUT -i eth0, OUTPUT -o eth0) holds each packet %s (-serve-delay)", rtt/2), stop, nil
}

const delayQueue = 2121

// nfqueue message types and attributes (linux/netfilter/nfnetlink_queue.h).
const (
	nfnlSubsysQueue  = 3
	nfqnlMsgPacket   = 0
	nfqnlMsgVerdictB = 3 // NFQNL_MSG_VERDICT_BATCH
	nfqnlMsgConfig   = 2
	nfqaPacketHdr    = 1
	nfqaVerdictHdr   = 2
	nfqaCfgCmd       = 1
	nfqaCfgParams    = 2
	nfqaCfgQueueMax  = 3
	nfqaCfgMask      = 4
	nfqaCfgFlags     = 5
	nfqnlCfgCmdBind  = 1
	nfqnlCopyMeta    = 1
	nfqaCfgFFailOpen = 1
	nfAccept         = 1
)

// serveDelay is -serve-delay "queue delay": it accepts every packet of the
// NFQUEUE queue delay after it was queued, in order.
func serveDelay(spec string) error {
	f := strings.Fields(spec)
	if len(f) != 2 {
		return fmt.Errorf("-serve-delay %q: want \"queue delay\"", spec)
	}
	q, err := strconv.ParseUint(f[0], 10, 16)
	if err != nil {
		return err
	}
	delay, err := time.ParseDuration(f[1])
	if err != nil {
		return err
	}
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
	if err != nil {
		return fmt.Errorf("nfqueue: %w", err)
	}
	defer c.Close()
	c.SetReadBuffer(8 << 20)
	c.SetOption(netlink.NoENOBUFS, true)
	queue := uint16(q)
	msg := func(typ int, flags netlink.HeaderFlags, attrs []netlink.Attribute) netlink.Message {
		ae, _ := netlink.MarshalAttributes(attrs)
		hdr := []byte{unix.AF_UNSPEC, 0, 0, 0} // nfgenmsg: family, version, res_id (queue, big endian)
		binary.BigEndian.PutUint16(hdr[2:], queue)
		return netlink.Message{
			Header: netlink.Header{Type: netlink.HeaderType(nfnlSubsysQueue<<8 | typ), Flags: netlink.Request | flags},
			Data:   append(hdr, ae...),
		}
	}
	be32 := func(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
	params := append(be32(0xffff), nfqnlCopyMeta)
	for _, attrs := range [][]netlink.Attribute{
		{{Type: nfqaCfgCmd, Data: []byte{nfqnlCfgCmdBind, 0, 0, 0}}},
		{{Type: nfqaCfgParams, Data: params}, {Type: nfqaCfgQueueMax, Data: be32(100000)},
			{Type: nfqaCfgMask, Data: be32(nfqaCfgFFailOpen)}, {Type: nfqaCfgFlags, Data: be32(nfqaCfgFFailOpen)}},
	} {
		if _, err := c.Execute(msg(nfqnlMsgConfig, netlink.Acknowledge, attrs)); err != nil {
			return fmt.Errorf("nfqueue %d config: %w", queue, err)
		}
	}
	type held struct {
		id  uint32
		due time.Time
	}
	ch := make(chan held, 200000)
	go func() {
		for {
			msgs, err := c.Receive()
			if err != nil {
				fmt.Println("delay: receive:", err)
				continue
			}
			now := time.Now()
			for _, m := range msgs {
				if m.Header.Type != netlink.HeaderType(nfnlSubsysQueue<<8|nfqnlMsgPacket) || len(m.Data) < 4 {
					continue
				}
				ad, err := netlink.NewAttributeDecoder(m.Data[4:])
				if err != nil {
					continue
				}
				for ad.Next() {
					if ad.Type() == nfqaPacketHdr && len(ad.Bytes()) >= 4 {
						ch <- held{binary.BigEndian.Uint32(ad.Bytes()), now.Add(delay)}
					}
				}
			}
		}
	}()
	fmt.Println("delaying queue", queue, "by", delay)
	// The Go scheduler's sleeps wake on whole milliseconds at best
	// (epoll_wait); nanosleep in a thread of its own is exact to µs.
	runtime.LockOSThread()
	sleep := func(d time.Duration) {
		if d <= 0 {
			return
		}
		ts := unix.NsecToTimespec(int64(d))
		for unix.Nanosleep(&ts, &ts) == unix.EINTR {
		}
	}
	for h := range ch {
		sleep(time.Until(h.due))
		// Every packet queued up to the last one now due goes with one
		// batch verdict.
		last := h.id
		for more := true; more; {
			select {
			case n := <-ch:
				if time.Until(n.due) > 0 {
					if _, err := c.Send(msg(nfqnlMsgVerdictB, 0, []netlink.Attribute{{Type: nfqaVerdictHdr, Data: append(be32(nfAccept), be32(last)...)}})); err != nil {
						fmt.Println("delay: verdict:", err)
					}
					sleep(time.Until(n.due))
				}
				last = n.id
			default:
				more = false
			}
		}
		if _, err := c.Send(msg(nfqnlMsgVerdictB, 0, []netlink.Attribute{{Type: nfqaVerdictHdr, Data: append(be32(nfAccept), be32(last)...)}})); err != nil {
			fmt.Println("delay: verdict:", err)
		}
	}
	return nil
}
