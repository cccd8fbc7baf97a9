package transparent

import (
	"errors"
	"fmt"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// MarkRuleText is the mark rule as `nft list table inet ftpalg-transparent`
// prints it (%#08x: the mark).
const MarkRuleText = "meta l4proto tcp socket transparent 1 meta mark set meta mark | 0x%08x"

// markExprs is the mark rule: a TCP packet that belongs to a transparent
// socket of this namespace gets the mark bits set (the other bits of its
// mark kept).
func markExprs(mark uint32) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Socket{Key: expr.SocketKeyTransparent, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{1}},
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(^mark), Xor: binaryutil.NativeEndian.PutUint32(mark)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
	}
}

// NFT is the Marker over nftables (in the current network namespace).
type NFT struct{}

func (NFT) conn() (*nftables.Conn, error) {
	c, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("nftables netlink socket: %w", err)
	}
	return c, nil
}

var table = &nftables.Table{Name: NFTTable, Family: nftables.TableFamilyINet}

func (n NFT) exists(c *nftables.Conn) (bool, error) {
	ts, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return false, err
	}
	return slices.ContainsFunc(ts, func(t *nftables.Table) bool { return t.Name == NFTTable }), nil
}

// Install replaces the table, in one transaction.
func (n NFT) Install(mark uint32) error {
	c, err := n.conn()
	if err != nil {
		return err
	}
	defer c.CloseLasting()
	ex, err := n.exists(c)
	if err != nil {
		return err
	}
	if ex {
		c.DelTable(table)
	}
	c.AddTable(table)
	policy := nftables.ChainPolicyAccept
	ch := c.AddChain(&nftables.Chain{Name: "prerouting", Table: table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityMangle, Policy: &policy})
	c.AddRule(&nftables.Rule{Table: table, Chain: ch, Exprs: markExprs(mark)})
	return c.Flush()
}

// Remove deletes the table if it exists.
func (n NFT) Remove() error {
	c, err := n.conn()
	if err != nil {
		return err
	}
	defer c.CloseLasting()
	ex, err := n.exists(c)
	if errors.Is(err, unix.EPROTONOSUPPORT) || errors.Is(err, unix.EOPNOTSUPP) {
		return nil // no nf_tables in this kernel: nothing can be there
	}
	if err != nil || !ex {
		return err
	}
	c.DelTable(table)
	return c.Flush()
}
