// Package ipset adds, deletes, tests and lists the members of a
// hash:ip,port,ip set (source ip, TCP port, destination ip) over nfnl.
// Sets themselves (create, destroy, list of sets) are made rarely and
// stay with github.com/vishvananda/netlink.
//
// Hand-written: a member add or delete is on the path of every 227 and
// PORT, and vishvananda's request objects cost ~25 allocations each where
// this builds in place and allocates nothing.
package ipset

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/ftpalg/ftpalg/natrules/internal/nfnl"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// Entry is one member of a hash:ip,port,ip set.
type Entry struct {
	Set  string
	Src  netip.Addr
	Port uint16 // TCP
	Dst  netip.Addr
}

func (e Entry) String() string {
	return fmt.Sprintf("%s %s,tcp:%d,%s", e.Set, e.Src, e.Port, e.Dst)
}

func msgType(cmd int) uint16 { return nfnl.MsgType(unix.NFNL_SUBSYS_IPSET, uint16(cmd)) }

// AppendRequest appends the body of command cmd (IPSET_CMD_ADD, DEL or
// TEST) about e: the attributes `ipset add SET src,tcp:port,dst timeout
// ttl` sends; ttl (seconds) only with ADD.
func AppendRequest(b []byte, cmd int, e Entry, ttl uint32) []byte {
	b = appendHead(b, e.Set)
	b, data := nfnl.BeginNest(b, nl.IPSET_ATTR_DATA)
	if cmd == nl.IPSET_CMD_ADD {
		b = nfnl.AppendUint32Attr(b, nl.IPSET_ATTR_TIMEOUT|nl.NLA_F_NET_BYTEORDER, ttl)
	}
	b = appendAddr(b, nl.IPSET_ATTR_IP, e.Src)
	b = appendAddr(b, nl.IPSET_ATTR_IP2, e.Dst)
	b = nfnl.AppendAttr(b, nl.IPSET_ATTR_PROTO, unix.IPPROTO_TCP)
	b = nfnl.AppendAttr(b, nl.IPSET_ATTR_PORT|nl.NLA_F_NET_BYTEORDER, byte(e.Port>>8), byte(e.Port))
	b = nfnl.AppendUint32Attr(b, nl.IPSET_ATTR_LINENO|nl.NLA_F_NET_BYTEORDER, 0)
	return nfnl.EndNest(b, data)
}

// appendHead appends what every ipset request starts with.
func appendHead(b []byte, set string) []byte {
	b = nfnl.AppendNfgen(b, unix.AF_NETLINK, 0)
	b = nfnl.AppendAttr(b, nl.IPSET_ATTR_PROTOCOL, nl.IPSET_PROTOCOL)
	return nfnl.AppendStringAttr(b, nl.IPSET_ATTR_SETNAME, set)
}

func appendAddr(b []byte, typ uint16, a netip.Addr) []byte {
	b, at := nfnl.BeginNest(b, typ)
	t := uint16(nl.IPSET_ATTR_IPADDR_IPV4)
	if !a.Is4() {
		t = nl.IPSET_ATTR_IPADDR_IPV6
	}
	b = nfnl.AppendAddrAttr(b, t|nl.NLA_F_NET_BYTEORDER, a)
	return nfnl.EndNest(b, at)
}

// Error returns ipset's own codes (IPSET_ERR_*) as nl.IPSetError, with
// their text; other errors as they are.
func Error(err error) error {
	if err == nil {
		return nil
	}
	errno, ok := err.(unix.Errno) // as nfnl returns it
	if !ok {
		var wrapped unix.Errno // escapes: only on this path
		if !errors.As(err, &wrapped) {
			return err
		}
		errno = wrapped
	}
	if int(errno) >= nl.IPSET_ERR_PRIVATE {
		return nl.IPSetError(uintptr(errno))
	}
	return err
}

// request sends command cmd about e and waits for the acknowledgement.
func request(c *nfnl.Conn, cmd int, e Entry, ttl uint32) error {
	return Error(c.Request(msgType(cmd), unix.NLM_F_ACK,
		func(b []byte) []byte { return AppendRequest(b, cmd, e, ttl) }, nil))
}

// Add adds e with a timeout of ttl seconds. No NLM_F_EXCL: adding a
// present member refreshes it.
func Add(c *nfnl.Conn, e Entry, ttl uint32) error { return request(c, nl.IPSET_CMD_ADD, e, ttl) }

// Del deletes e; deleting a missing member is no error.
func Del(c *nfnl.Conn, e Entry) error { return request(c, nl.IPSET_CMD_DEL, e, 0) }

// Test says whether e is a member.
func Test(c *nfnl.Conn, e Entry) (bool, error) {
	err := request(c, nl.IPSET_CMD_TEST, e, 0)
	if err == nl.IPSetError(nl.IPSET_ERR_EXIST) {
		return false, nil
	}
	return err == nil, err
}

// List returns the members of set.
func List(c *nfnl.Conn, set string) ([]Entry, error) {
	var out []Entry
	bad := false
	err := c.Dump(msgType(nl.IPSET_CMD_LIST), 0, func(b []byte) []byte { return appendHead(b, set) },
		func(data []byte) {
			var ok bool
			if out, ok = appendMembers(out, set, data); !ok {
				bad = true
			}
		})
	if err == nil && bad {
		err = nfnl.ErrMalformed
	}
	if err != nil {
		return nil, fmt.Errorf("ipset list %s: %w", set, Error(err))
	}
	return out, nil
}

// appendMembers appends the members in one IPSET_CMD_LIST message.
func appendMembers(out []Entry, set string, msg []byte) ([]Entry, bool) {
	if len(msg) < nfnl.NfgenLen {
		return out, false
	}
	it := nfnl.Attrs(msg[nfnl.NfgenLen:])
	for it.Next() {
		if it.Type != nl.IPSET_ATTR_ADT {
			continue
		}
		adt := nfnl.Attrs(it.Value)
		for adt.Next() {
			if adt.Type != nl.IPSET_ATTR_DATA {
				continue
			}
			e, ok := parseMember(adt.Value)
			if !ok {
				return out, false
			}
			e.Set = set
			out = append(out, e)
		}
		if adt.Bad() {
			return out, false
		}
	}
	return out, !it.Bad()
}

func parseMember(b []byte) (e Entry, ok bool) {
	it := nfnl.Attrs(b)
	for it.Next() {
		switch it.Type {
		case nl.IPSET_ATTR_IP, nl.IPSET_ATTR_IP2:
			in := nfnl.Attrs(it.Value)
			if !in.Next() {
				return e, false
			}
			a, ok := netip.AddrFromSlice(in.Value)
			if !ok {
				return e, false
			}
			if it.Type == nl.IPSET_ATTR_IP {
				e.Src = a.Unmap()
			} else {
				e.Dst = a.Unmap()
			}
		case nl.IPSET_ATTR_PORT:
			if len(it.Value) != 2 {
				return e, false
			}
			e.Port = uint16(it.Value[0])<<8 | uint16(it.Value[1])
		}
	}
	return e, !it.Bad() && e.Src.IsValid() && e.Dst.IsValid()
}
