package alg

// cmdKind classifies a forwarded client command by what its reply means to
// the engine.
type cmdKind uint8

const (
	cmdOther    cmdKind = iota
	cmdGreeting         // the server's greeting is the first expected reply
	cmdUSER             // USER, ACCT: a 230 logs the user in
	cmdPASS             // PASS: a 230 logs the user in, a 530 is a failed login
	cmdPASV
	cmdEPSV
	cmdPORT // PORT and EPRT; entry.hole names the hole it opened
	cmdAUTH
	cmdREIN
	cmdTransfer // RETR, STOR, STOU, APPE, LIST, NLST, MLSD
)

type entry struct {
	kind cmdKind
	hole uint64 // cmdPORT: ID of the hole opened for it
	// seq numbers data negotiation commands (PASV, EPSV, PORT, EPRT) and
	// REIN in the order sent; 0 for the others.
	seq uint64
	// Family bridge only (bridge.go). want227: the client asked PASV and
	// gets a 227 whatever the server answers; retry: the server may refuse
	// this EPSV/EPRT (500, 502, 522) and get PASV/PORT instead.
	want227, retry bool
}

// fifo holds the commands the server has not answered yet, oldest first,
// so each final reply is matched with the command it answers (a 227 opens
// something only if it answers a PASV). Fixed size: no allocation.
type fifo struct {
	e    [maxOutstanding]entry
	head int
	n    int
}

func (q *fifo) full() bool { return q.n == len(q.e) }

func (q *fifo) push(e entry) {
	q.e[(q.head+q.n)%len(q.e)] = e
	q.n++
}

// front returns the oldest entry without removing it.
func (q *fifo) front() (entry, bool) {
	if q.n == 0 {
		return entry{}, false
	}
	return q.e[q.head], true
}

func (q *fifo) pop() (entry, bool) {
	e, ok := q.front()
	if ok {
		q.head = (q.head + 1) % len(q.e)
		q.n--
	}
	return e, ok
}

// dropHole removes the entry of a PORT/EPRT whose hole failed to open: the
// proxy never sends that command, so no reply will come for it.
func (q *fifo) dropHole(id uint64) {
	for k := q.n - 1; k >= 0; k-- {
		if e := q.e[(q.head+k)%len(q.e)]; e.kind == cmdPORT && e.hole == id {
			for m := k; m < q.n-1; m++ {
				q.e[(q.head+m)%len(q.e)] = q.e[(q.head+m+1)%len(q.e)]
			}
			q.n--
			return
		}
	}
}
