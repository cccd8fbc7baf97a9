package natrules

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"syscall"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// ipsetConn adds and deletes set members on one persistent netlink socket:
// a request and its ACK, two system calls. The general netlink client asks
// the kernel for its socket's address on every reply it reads, a third
// call (and a handful of allocations) on the path of every 227 and PORT.
// Setup opens it, so that the descriptor exists before the first hole.
type ipsetConn struct {
	mu sync.Mutex
	c  *ctConn
}

// openIpsetConn opens the socket in the manager's namespace, once.
func (m *Manager) openIpsetConn() error {
	ic := &m.ipc
	ic.mu.Lock()
	defer ic.mu.Unlock()
	if ic.c != nil {
		return nil
	}
	c, err := m.dialCtNS()
	if err != nil {
		return err
	}
	ic.c = c
	return nil
}

// ipsetEntry sends one IPSET_CMD_ADD (with timeout ttl, seconds) or
// IPSET_CMD_DEL for e. No NLM_F_EXCL: adding a present member refreshes
// it, deleting a missing one is no error.
func (m *Manager) ipsetEntry(cmd int, e setEntry, ttl uint32) error {
	if err := m.openIpsetConn(); err != nil {
		return fmt.Errorf("ipset netlink socket: %w", err)
	}
	data := nl.NewRtAttr(nl.IPSET_ATTR_DATA|int(nl.NLA_F_NESTED), nil)
	if cmd == nl.IPSET_CMD_ADD {
		data.AddChild(&nl.Uint32Attribute{Type: nl.IPSET_ATTR_TIMEOUT | nl.NLA_F_NET_BYTEORDER, Value: ttl})
	}
	data.AddChild(ipsetAddr(nl.IPSET_ATTR_IP, e.Src.AsSlice()))
	data.AddChild(ipsetAddr(nl.IPSET_ATTR_IP2, e.Dst.AsSlice()))
	data.AddChild(nl.NewRtAttr(nl.IPSET_ATTR_PROTO, nl.Uint8Attr(unix.IPPROTO_TCP)))
	port := binary.BigEndian.AppendUint16(nil, e.Port)
	data.AddChild(nl.NewRtAttr(int(nl.IPSET_ATTR_PORT|nl.NLA_F_NET_BYTEORDER), port))
	data.AddChild(&nl.Uint32Attribute{Type: nl.IPSET_ATTR_LINENO | nl.NLA_F_NET_BYTEORDER, Value: 0})

	body := nfgenHeader(unix.AF_NETLINK, 0)
	body = append(body, nl.NewRtAttr(nl.IPSET_ATTR_PROTOCOL, nl.Uint8Attr(nl.IPSET_PROTOCOL)).Serialize()...)
	body = append(body, nl.NewRtAttr(nl.IPSET_ATTR_SETNAME, nl.ZeroTerminated(e.Set)).Serialize()...)
	body = append(body, data.Serialize()...)
	_, err := m.ipc.c.roundTrip(uint16(unix.NFNL_SUBSYS_IPSET<<8|cmd), unix.NLM_F_ACK, body)
	var errno syscall.Errno
	if errors.As(err, &errno) && int(errno) >= nl.IPSET_ERR_PRIVATE {
		err = nl.IPSetError(uintptr(errno)) // ipset's own codes, with their text
	}
	return err
}

func ipsetAddr(typ int, ip []byte) *nl.RtAttr {
	a := nl.NewRtAttr(typ|int(nl.NLA_F_NESTED), nil)
	t := nl.IPSET_ATTR_IPADDR_IPV4
	if len(ip) == 16 {
		t = nl.IPSET_ATTR_IPADDR_IPV6
	}
	a.AddChild(nl.NewRtAttr(t|int(nl.NLA_F_NET_BYTEORDER), ip))
	return a
}
