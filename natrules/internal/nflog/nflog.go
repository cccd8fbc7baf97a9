// Package nflog reads an NFLOG group (nfnetlink_log) over nfnl, and the
// addresses and TCP ports of the logged packets.
//
// Hand-written: neither github.com/vishvananda/netlink nor
// github.com/google/nftables speaks nfnetlink_log, and the read path
// allocates nothing.
package nflog

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/ftpalg/ftpalg/natrules/internal/nfnl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// nfnetlink_log constants (linux/netfilter/nfnetlink_log.h); x/sys has
// only a few of them.
const (
	subsysULOG  = 4
	msgPacket   = 0
	msgConfig   = 1
	attrPayload = 9
	cfgCmd      = 1
	cfgMode     = 2
	cfgTimeout  = 4
	cfgQThresh  = 5
	cfgCmdBind  = 1
	copyPacket  = 2
	typePacket  = subsysULOG<<8 | msgPacket
	typeConfig  = subsysULOG<<8 | msgConfig
)

// Socket is bound to one NFLOG group and reads without blocking.
type Socket struct {
	c     *nfnl.Conn
	group uint16
}

// Open binds group in the network namespace ns (netns.None: the calling
// thread's): the kernel copies the first snap bytes of each packet and
// sends each at once, into a receive buffer of rcvbuf bytes.
func Open(ns netns.NsHandle, group uint16, snap uint32, rcvbuf int) (*Socket, error) {
	c, err := nfnl.DialNS(ns)
	if err != nil {
		return nil, fmt.Errorf("nflog socket: %w", err)
	}
	fail := func(what string, err error) (*Socket, error) {
		c.Close()
		switch {
		case errors.Is(err, unix.EBUSY):
			return nil, fmt.Errorf("nflog group %d %s: %w (another program, e.g. ulogd, listens on it)", group, what, err)
		case errors.Is(err, unix.EPERM):
			// What the kernel answers when another socket holds the group.
			return nil, fmt.Errorf("nflog group %d %s: %w (another program, e.g. ulogd, listens on it, or CAP_NET_ADMIN is missing)", group, what, err)
		}
		return nil, fmt.Errorf("nflog group %d %s: %w", group, what, err)
	}
	if err := c.SetReadBuffer(rcvbuf); err != nil {
		return fail("receive buffer", err)
	}
	s := &Socket{c: c, group: group}
	if err := s.config(func(b []byte) []byte { return appendBind(b, group) }); err != nil {
		return fail("bind", err)
	}
	if err := s.config(func(b []byte) []byte { return appendMode(b, group, snap) }); err != nil {
		return fail("copy mode", err)
	}
	if err := c.SetNonblock(); err != nil {
		return fail("non-blocking", err)
	}
	return s, nil
}

// appendBind appends the body of the configuration that binds group.
func appendBind(b []byte, group uint16) []byte {
	b = nfnl.AppendNfgen(b, unix.AF_UNSPEC, group)
	return nfnl.AppendAttr(b, cfgCmd, cfgCmdBind)
}

// appendMode appends the body of the configuration that copies snap
// bytes of each packet and sends each at once (no batching timer).
func appendMode(b []byte, group uint16, snap uint32) []byte {
	b = nfnl.AppendNfgen(b, unix.AF_UNSPEC, group)
	var mode [6]byte // struct nfulnl_msg_config_mode: copy_range, copy_mode, pad
	binary.BigEndian.PutUint32(mode[:], snap)
	mode[4] = copyPacket
	b = nfnl.AppendAttr(b, cfgMode, mode[:]...)
	b = nfnl.AppendUint32Attr(b, cfgQThresh, 1)
	return nfnl.AppendUint32Attr(b, cfgTimeout, 0)
}

// config sends one NFULNL_MSG_CONFIG and waits for its acknowledgement.
func (s *Socket) config(body func([]byte) []byte) error {
	return s.c.Request(typeConfig, unix.NLM_F_ACK, body, nil)
}

// Group is the NFLOG group the socket is bound to.
func (s *Socket) Group() uint16 { return s.group }

// Read reads one datagram, if one waits, and calls fn with each logged
// packet message in it (nfgenmsg and attributes, valid during the call;
// see Parse). It returns unix.EAGAIN when nothing waits, unix.ENOBUFS
// when the kernel dropped messages (the socket overran), and
// nfnl.ErrMalformed after a datagram it could not read whole.
func (s *Socket) Read(fn func(msg []byte)) error {
	b, err := s.c.Recv()
	if err != nil {
		return err
	}
	it := nfnl.Msgs(b)
	for it.Next() {
		if it.Type == typePacket {
			fn(it.Data)
		}
	}
	if it.Bad() {
		return nfnl.ErrMalformed
	}
	return nil
}

// Close closes the socket, which unbinds the group (the kernel drops the
// instances of a released port).
func (s *Socket) Close() error { return s.c.Close() }
