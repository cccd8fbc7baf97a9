package alg

// Lines the engine writes itself. They are fixed texts: echoing anything a
// peer sent would let one peer put words into the other's mouth. All fit
// well under the smallest MaxLine NewSession accepts (minMaxLine).
var (
	msgClosing        = []byte("421 Service not available, closing control connection.\r\n")
	msgBadEOL         = []byte("500 Syntax error: lines must end in CRLF.\r\n")
	msgBadTelnet      = []byte("500 Syntax error: Telnet command not allowed here.\r\n")
	msgUnrecognized   = []byte("500 Syntax error, command unrecognized.\r\n")
	msgBadArgs        = []byte("501 Syntax error in parameters or arguments.\r\n")
	msgBounce         = []byte("501 Data address must be this connection's client address.\r\n")
	msgPrivileged     = []byte("501 Data port must be 1024 or above.\r\n")
	msgForbiddenAddr  = []byte("501 Data address not allowed by gateway policy.\r\n")
	msgNotImplemented = []byte("502 Command not supported through this gateway.\r\n")
	msgDenied         = []byte("502 Command not allowed by gateway policy.\r\n")
	msgEPSVAll        = []byte("503 Bad sequence of commands: EPSV ALL in effect.\r\n")
	msgEPSVAllOK      = []byte("200 EPSV ALL ok.\r\n")
	msgNeedLogin      = []byte("530 Please login with USER and PASS.\r\n")
	msgNoTLS          = []byte("534 AUTH not allowed by gateway policy.\r\n")
	msgBadProto       = []byte("522 Network protocol not supported, use (1,2)\r\n")
	msgNoPort         = []byte("425 Can't open data connection: no free data port.\r\n")
	msgOpenFailed     = []byte("425 Can't open data connection: gateway could not install the rule.\r\n")
	msgBadPassive     = []byte("425 Can't open data connection: unacceptable passive reply from server.\r\n")
	msgPassiveFamily  = []byte("425 Can't open data connection: use EPSV on this connection.\r\n")
)

// minMaxLine is the smallest line cap accepted: room for every line above
// and for the longest rewrite (an EPRT with a full IPv6 address, ~62 bytes).
const minMaxLine = 128

// maxOutstanding caps client commands still waiting for their reply, so a
// pipelining client cannot grow the engine's memory.
const maxOutstanding = 32
