// gogzip compresses stdin to stdout with the Go standard library's
// compress/flate (raw deflate) or compress/gzip. Tests compare strata's
// goflate port with its output byte for byte.
//
// Build with the standard library only:
//
//	GO111MODULE=off go build -o gogzip .
package main

import (
	"bufio"
	"compress/flate"
	"compress/gzip"
	"flag"
	"fmt"
	"io"
	"os"
)

func main() {
	mode := flag.String("mode", "gzip", "flate (raw deflate, compress/flate) or gzip (compress/gzip)")
	level := flag.Int("level", -1, "compression level, -2..9")
	write := flag.Int("write", 32*1024, "bytes per Write call")
	flushEvery := flag.Int("flush-every", 0, "call Flush after every N bytes written (0: never)")
	flag.Parse()

	out := bufio.NewWriterSize(os.Stdout, 1<<20)
	var w interface {
		io.Writer
		Flush() error
		Close() error
	}
	var err error
	switch *mode {
	case "flate":
		w, err = flate.NewWriter(out, *level)
	case "gzip":
		w, err = gzip.NewWriterLevel(out, *level)
	default:
		err = fmt.Errorf("unknown mode %q", *mode)
	}
	if err != nil {
		fail(err)
	}
	if *write <= 0 {
		fail(fmt.Errorf("-write must be positive"))
	}
	in, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail(err)
	}
	sinceFlush := 0
	for len(in) > 0 {
		n := *write
		if n > len(in) {
			n = len(in)
		}
		if *flushEvery > 0 && n > *flushEvery-sinceFlush {
			n = *flushEvery - sinceFlush
		}
		if _, err := w.Write(in[:n]); err != nil {
			fail(err)
		}
		in = in[n:]
		sinceFlush += n
		if *flushEvery > 0 && sinceFlush == *flushEvery {
			if err := w.Flush(); err != nil {
				fail(err)
			}
			sinceFlush = 0
		}
	}
	if err := w.Close(); err != nil {
		fail(err)
	}
	if err := out.Flush(); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "gogzip:", err)
	os.Exit(1)
}
