package natrules

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// With iptables-nft, the first rule in a built-in chain creates its
// nftables base chain, and its table, when they are missing: ftpalg's jump
// rules would leave an empty `table ip nat` with `chain PREROUTING` behind
// after the sweep. baseChains records which of the base chains and tables
// ftpalg's jumps use were absent before Setup, and Teardown deletes those
// that are empty again. With iptables-legacy there is nothing in nftables
// to record and nothing is deleted.
//
// The record is kept where the chains are: one empty regular chain per
// created table or base chain in `table inet ftpalg-created` (chains
// "ip-nat" and "ip-nat-PREROUTING", say), so that it survives a crash for
// `ftpalg -cleanup` and the next instance, and goes with the namespace. A
// flush of the whole ruleset loses it: chains the canary then re-creates
// are left empty at teardown, as before this record existed.

// recordTable holds the record (no hook, no rule: it sees no packet).
const recordTable = "ftpalg-created"

// baseTables are the tables and base chains ftpalg's jump rules use (in
// both NAT backends, with and without capture: all are recorded).
var baseTables = []struct {
	name   string
	chains []string
}{
	{tFilter, []string{"INPUT", "FORWARD"}},
	{tNAT, []string{"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"}},
}

// baseKey names a table (Chain "") or a base chain of it.
type baseKey struct {
	Fam          Family
	Table, Chain string
}

func (k baseKey) String() string {
	return strings.TrimSpace(nftFamilyName(k.Fam) + " " + k.Table + " " + k.Chain)
}

// baseChains belongs to the static structure's owner goroutine (owner.go),
// which serialises its calls: it needs no lock of its own.
type baseChains struct {
	ns  netns.NsHandle
	log *slog.Logger

	created map[baseKey]bool // absent before some Setup, not yet removed
}

func newBaseChains(ns netns.NsHandle, log *slog.Logger) *baseChains {
	return &baseChains{ns: ns, log: log, created: map[baseKey]bool{}}
}

// record notes which of the families' tables and base chains are absent
// now, adding them to those an earlier Setup or instance recorded (they
// were created by ftpalg even though they exist now), and writes the
// record before anything is installed. A failure is logged: it only means
// empty chains may be left at teardown.
func (b *baseChains) record(fams []Family) {
	c, err := b.nftConn()
	var have map[baseKey]bool
	if err == nil {
		err = b.load(c)
	}
	if err == nil {
		have, err = b.existing(c, fams)
	}
	if err != nil {
		// Without nf_tables (iptables-legacy) there is nothing to record.
		b.log.Debug("base chains: nftables not readable, nothing recorded", "err", err)
		return
	}
	for _, f := range fams {
		for _, t := range baseTables {
			keys := []baseKey{{f, t.name, ""}}
			for _, ch := range t.chains {
				keys = append(keys, baseKey{f, t.name, ch})
			}
			for _, k := range keys {
				if !have[k] {
					b.created[k] = true
				}
			}
		}
	}
	if err := b.save(c); err != nil {
		b.log.Warn("base chains: after a crash, the empty ones ftpalg creates will stay", "err", err)
	}
}

// remove deletes the recorded base chains that are empty and accept, then
// the recorded tables that are empty, and forgets the record: whatever is
// left now has someone else's rules and is theirs. Call it after the
// sweep.
func (b *baseChains) remove() error {
	c, err := b.nftConn()
	if err == nil {
		err = b.load(c)
	}
	if err != nil && len(b.created) == 0 {
		b.log.Debug("base chains: nftables not readable, nothing recorded", "err", err)
		return nil
	}
	if err != nil {
		return fmt.Errorf("base chains: %w", err)
	}
	if len(b.created) == 0 {
		return nil
	}
	var errs []error
	keys := slices.Collect(maps.Keys(b.created))
	slices.SortFunc(keys, func(x, y baseKey) int {
		// Chains before tables.
		if (x.Chain == "") != (y.Chain == "") {
			if x.Chain == "" {
				return 1
			}
			return -1
		}
		return strings.Compare(x.String(), y.String())
	})
	for _, k := range keys {
		kept, err := b.removeOne(c, k)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("delete %s: %w", k, err))
			continue // keep it recorded: -cleanup may retry
		case kept != "":
			b.log.Info("base chain left in place", "what", k.String(), "why", kept)
		default:
			b.log.Debug("deleted what ftpalg created", "what", k.String())
		}
		delete(b.created, k)
	}
	if err := b.save(c); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("base chains: %w", err)
	}
	return nil
}

// removeOne deletes k if it is empty (and, for a chain, its policy is
// accept: dropping a chain whose policy someone set to drop would open the
// firewall). It returns why k stays, or "" if it is gone.
func (b *baseChains) removeOne(c *nftables.Conn, k baseKey) (string, error) {
	fam := nftFamily(k.Fam)
	tables, err := c.ListTablesOfFamily(fam)
	if err != nil {
		return "", err
	}
	i := slices.IndexFunc(tables, func(t *nftables.Table) bool { return t.Name == k.Table })
	if i < 0 {
		return "", nil // gone already (or never created)
	}
	t := tables[i]
	if k.Chain == "" {
		if t.Use > 0 {
			return fmt.Sprintf("%d chains, sets or objects in it", t.Use), nil
		}
		return b.delNonRec(&k, unix.NFT_MSG_DELTABLE)
	}
	chains, err := c.ListChainsOfTableFamily(fam)
	if err != nil {
		return "", err
	}
	j := slices.IndexFunc(chains, func(ch *nftables.Chain) bool { return ch.Table.Name == k.Table && ch.Name == k.Chain })
	if j < 0 {
		return "", nil
	}
	ch := chains[j]
	if ch.Policy == nil || *ch.Policy != nftables.ChainPolicyAccept {
		return "policy is not accept", nil
	}
	rules, err := c.GetRules(t, ch)
	if err != nil {
		return "", err
	}
	if len(rules) > 0 {
		return fmt.Sprintf("%d rules in it", len(rules)), nil
	}
	return b.delNonRec(&k, unix.NFT_MSG_DELCHAIN)
}

// delNonRec deletes a table or chain with NLM_F_NONREC: the kernel
// refuses (EBUSY) if a rule or chain was added since it was found empty,
// instead of deleting it with its contents as `nft delete` would.
func (b *baseChains) delNonRec(k *baseKey, msg int) (string, error) {
	ae := netlink.NewAttributeEncoder()
	if msg == unix.NFT_MSG_DELCHAIN {
		ae.String(unix.NFTA_CHAIN_TABLE, k.Table)
		ae.String(unix.NFTA_CHAIN_NAME, k.Chain)
	} else {
		ae.String(unix.NFTA_TABLE_NAME, k.Table)
	}
	attrs, err := ae.Encode()
	if err != nil {
		return "", err
	}
	conn, err := b.dial()
	if err != nil {
		return "", err
	}
	defer conn.Close()
	batch := []byte{0, 0, 0, unix.NFNL_SUBSYS_NFTABLES} // nfgenmsg: res_id = subsystem
	body := append([]byte{byte(nftFamily(k.Fam)), unix.NFNETLINK_V0, 0, 0}, attrs...)
	msgs := []netlink.Message{
		{Header: netlink.Header{Type: unix.NFNL_MSG_BATCH_BEGIN, Flags: netlink.Request}, Data: batch},
		{Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | msg),
			Flags: netlink.Request | netlink.Acknowledge | unix.NLM_F_NONREC}, Data: body},
		{Header: netlink.Header{Type: unix.NFNL_MSG_BATCH_END, Flags: netlink.Request}, Data: batch},
	}
	if _, err := conn.SendMessages(msgs); err != nil {
		return "", err
	}
	_, err = conn.Receive()
	switch {
	case errors.Is(err, unix.EBUSY):
		return "filled since it was found empty", nil
	case errors.Is(err, unix.ENOENT):
		return "", nil
	}
	return "", err
}

// existing lists which of the recorded kinds of tables and base chains
// exist now.
func (b *baseChains) existing(c *nftables.Conn, fams []Family) (map[baseKey]bool, error) {
	have := map[baseKey]bool{}
	for _, f := range fams {
		tables, err := c.ListTablesOfFamily(nftFamily(f))
		if err != nil {
			return nil, fmt.Errorf("list %s tables: %w", nftFamilyName(f), err)
		}
		for _, t := range tables {
			have[baseKey{f, t.Name, ""}] = true
		}
		chains, err := c.ListChainsOfTableFamily(nftFamily(f))
		if err != nil {
			return nil, fmt.Errorf("list %s chains: %w", nftFamilyName(f), err)
		}
		for _, ch := range chains {
			have[baseKey{f, ch.Table.Name, ch.Name}] = true
		}
	}
	return have, nil
}

func (b *baseChains) nftConn() (*nftables.Conn, error) {
	var opts []nftables.ConnOption
	if b.ns.IsOpen() {
		opts = append(opts, nftables.WithNetNSFd(int(b.ns)))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("nftables netlink socket: %w", err)
	}
	return c, nil
}

func (b *baseChains) dial() (*netlink.Conn, error) {
	cfg := &netlink.Config{}
	if b.ns.IsOpen() {
		cfg.NetNS = int(b.ns)
	}
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, cfg)
	if err != nil {
		return nil, fmt.Errorf("netfilter socket: %w", err)
	}
	return c, nil
}

// recordName is k's chain name in the record table.
func (k baseKey) recordName() string { return strings.ReplaceAll(k.String(), " ", "-") }

// load adds the keys of the record table to created.
func (b *baseChains) load(c *nftables.Conn) error {
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return fmt.Errorf("read the record: %w", err)
	}
	for _, ch := range chains {
		if ch.Table.Name != recordTable {
			continue
		}
		f := strings.SplitN(ch.Name, "-", 3)
		if len(f) < 2 {
			continue
		}
		k := baseKey{Table: f[1]}
		switch f[0] {
		case "ip":
			k.Fam = IPv4
		case "ip6":
			k.Fam = IPv6
		default:
			continue
		}
		if len(f) == 3 {
			k.Chain = f[2]
		}
		b.created[k] = true
	}
	return nil
}

// save writes created to the record table in one transaction, or
// deletes the table when nothing is recorded.
func (b *baseChains) save(c *nftables.Conn) error {
	t := &nftables.Table{Name: recordTable, Family: nftables.TableFamilyINet}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return fmt.Errorf("write the record: %w", err)
	}
	exists := slices.ContainsFunc(tables, func(x *nftables.Table) bool { return x.Name == recordTable })
	if exists {
		c.DelTable(t) // rewritten whole
	}
	if len(b.created) > 0 {
		c.AddTable(t)
		for k := range b.created {
			c.AddChain(&nftables.Chain{Name: k.recordName(), Table: t})
		}
	}
	if !exists && len(b.created) == 0 {
		return nil
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("write the record: %w", err)
	}
	return nil
}
