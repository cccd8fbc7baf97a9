package nfnl

import (
	"encoding/binary"
	"errors"

	"golang.org/x/sys/unix"
)

// NfgenLen is the length of struct nfgenmsg, the head of every nfnetlink
// message body.
const NfgenLen = 4

// ErrMalformed reports a reply that overruns its datagram.
var ErrMalformed = errors.New("malformed netlink reply")

// BeginMsg appends a netlink request header addressed to the kernel (port
// id 0); EndMsg(b, at) sets its length once the body is appended.
func BeginMsg(b []byte, typ, flags uint16, seq uint32) ([]byte, int) {
	at := len(b)
	b = binary.NativeEndian.AppendUint32(b, 0)
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = binary.NativeEndian.AppendUint16(b, unix.NLM_F_REQUEST|flags)
	b = binary.NativeEndian.AppendUint32(b, seq)
	return binary.NativeEndian.AppendUint32(b, 0), at
}

// EndMsg sets the length of the message begun at at.
func EndMsg(b []byte, at int) []byte {
	binary.NativeEndian.PutUint32(b[at:], uint32(len(b)-at))
	return b
}

// AppendNfgen appends struct nfgenmsg; res_id is big-endian.
func AppendNfgen(b []byte, family uint8, resID uint16) []byte {
	return append(b, family, unix.NFNETLINK_V0, byte(resID>>8), byte(resID))
}

// MsgType is an nfnetlink message type: the subsystem in the high byte.
func MsgType(subsys, msg uint16) uint16 { return subsys<<8 | msg }

// MsgIter walks the netlink messages of one datagram without copying:
//
//	for it := nfnl.Msgs(datagram); it.Next(); { it.Type, it.Seq, it.Data }
type MsgIter struct {
	b     []byte
	Type  uint16
	Flags uint16
	Seq   uint32
	Data  []byte // the body, after the header
	bad   bool
}

// Msgs returns an iterator over the messages of datagram b.
func Msgs(b []byte) MsgIter { return MsgIter{b: b} }

// Next moves to the next message; false at the end or at one that
// overruns the datagram.
func (it *MsgIter) Next() bool {
	if len(it.b) < unix.NLMSG_HDRLEN {
		it.bad = it.bad || len(it.b) != 0
		return false
	}
	l := int(binary.NativeEndian.Uint32(it.b[0:4]))
	if l < unix.NLMSG_HDRLEN || l > len(it.b) {
		it.bad = true
		return false
	}
	it.Type = binary.NativeEndian.Uint16(it.b[4:6])
	it.Flags = binary.NativeEndian.Uint16(it.b[6:8])
	it.Seq = binary.NativeEndian.Uint32(it.b[8:12])
	it.Data = it.b[unix.NLMSG_HDRLEN:l]
	it.b = it.b[min(Align(l), len(it.b)):]
	return true
}

// Bad reports whether the walk stopped at a malformed message (or at
// trailing bytes too short for a header).
func (it *MsgIter) Bad() bool { return it.bad }

// Rest is what the walk has not read yet.
func (it *MsgIter) Rest() []byte { return it.b }

// ErrorCode reads an NLMSG_ERROR's body: nil for an acknowledgement, else
// the kernel's code as a unix.Errno (errors.Is(err, unix.EEXIST) works).
func ErrorCode(data []byte) error {
	if len(data) < 4 {
		return errors.New("short netlink error")
	}
	if e := int32(binary.NativeEndian.Uint32(data)); e != 0 {
		return unix.Errno(-e)
	}
	return nil
}
