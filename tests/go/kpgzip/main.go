// kpgzip compresses stdin to stdout with klauspost/compress (flate, gzip) or
// klauspost/pgzip, as Debian 12 packages them. Tests compare strata's
// re-encoders with its output byte for byte.
//
// Build in GOPATH mode against the Debian sources:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o kpgzip .
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/klauspost/compress/flate"
	kgzip "github.com/klauspost/compress/gzip"
	"github.com/klauspost/pgzip"
)

func main() {
	mode := flag.String("mode", "pgzip", "flate (raw deflate), gzip (klauspost/compress/gzip) or pgzip")
	level := flag.Int("level", -1, "compression level, -2..9")
	block := flag.Int("block", 0, "pgzip block size in bytes (0: pgzip's default, 1 MiB)")
	blocks := flag.Int("blocks", 4, "pgzip blocks in flight")
	write := flag.Int("write", 32*1024, "bytes per Write call")
	flushEvery := flag.Int("flush-every", 0, "call Flush after every N bytes written (0: never)")
	dict := flag.String("dict", "", "flate mode: file holding a preset dictionary")
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
		var d []byte
		if *dict != "" {
			if d, err = os.ReadFile(*dict); err != nil {
				fail(err)
			}
		}
		w, err = flate.NewWriterDict(out, *level, d)
	case "gzip":
		w, err = kgzip.NewWriterLevel(out, *level)
	case "pgzip":
		var z *pgzip.Writer
		z, err = pgzip.NewWriterLevel(out, *level)
		if err == nil && *block > 0 {
			err = z.SetConcurrency(*block, *blocks)
		}
		w = z
	default:
		err = fmt.Errorf("unknown mode %q", *mode)
	}
	if err != nil {
		fail(err)
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
	fmt.Fprintln(os.Stderr, "kpgzip:", err)
	os.Exit(1)
}
