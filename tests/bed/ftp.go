package bed

import (
	"bufio"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
)

// ReadReply reads one complete FTP reply from r: a multi-line reply ends
// only on its code followed by a space. It returns the code and every line
// read; on a read error, the text read so far.
func ReadReply(r *bufio.Reader) (int, string, error) {
	var all strings.Builder
	first := ""
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return 0, all.String(), err
		}
		all.WriteString(line)
		if len(line) < 4 {
			continue
		}
		if first == "" {
			first = line[:3]
			if line[3] == ' ' {
				break
			}
			continue
		}
		if line[:3] == first && line[3] == ' ' {
			break
		}
	}
	code, _ := strconv.Atoi(first)
	return code, all.String(), nil
}

var tuple227 = regexp.MustCompile(`(\d+),(\d+),(\d+),(\d+),(\d+),(\d+)`)

// Parse227 returns the endpoint a 227 reply announces.
func Parse227(text string) (netip.AddrPort, error) {
	m := tuple227.FindStringSubmatch(text)
	if m == nil {
		return netip.AddrPort{}, fmt.Errorf("no tuple in %q", text)
	}
	var n [6]int
	for i := range n {
		n[i], _ = strconv.Atoi(m[i+1])
	}
	a := netip.AddrFrom4([4]byte{byte(n[0]), byte(n[1]), byte(n[2]), byte(n[3])})
	return netip.AddrPortFrom(a, uint16(n[4]<<8|n[5])), nil
}
