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

	// TLS termination (tls.go), RFC 2228 and RFC 4217 codes.
	msgAuthOK       = []byte("234 AUTH TLS successful.\r\n")
	msgPBSZ         = []byte("200 PBSZ=0\r\n")
	msgProtOK       = []byte("200 PROT command successful.\r\n")
	msgTLSMechanism = []byte("504 Security mechanism not supported, use AUTH TLS.\r\n")
	msgTLSAgain     = []byte("503 Already using TLS.\r\n")
	msgTLSPending   = []byte("503 Bad sequence of commands: AUTH TLS while commands await a reply.\r\n")
	msgTLSFirst     = []byte("503 Bad sequence of commands: use AUTH TLS first.\r\n")
	msgPBSZFirst    = []byte("503 Bad sequence of commands: use PBSZ 0 first.\r\n")
	msgProtCDenied  = []byte("534 PROT C not allowed: data connections must be protected.\r\n")
	msgProtLevel    = []byte("536 Requested PROT level not supported, use PROT P.\r\n")
	msgProtUnknown  = []byte("504 PROT level not recognized, use PROT P.\r\n")
	msgCCC          = []byte("533 CCC not allowed: the control channel stays protected.\r\n")
	msgTLSRequired  = []byte("530 TLS required: use AUTH TLS before logging in.\r\n")
	msgProtRequired = []byte("521 Data connections must be protected: use PBSZ 0 and PROT P.\r\n")
)

// minMaxLine is the smallest line cap accepted: room for every line above
// and for the longest rewrite (an EPRT with a full IPv6 address, ~62 bytes).
const minMaxLine = 128

// maxOutstanding caps client commands still waiting for their reply, so a
// pipelining client cannot grow the engine's memory.
const maxOutstanding = 32
