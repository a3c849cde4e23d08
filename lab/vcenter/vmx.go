package main

// Reading and updating .vmx files, and the uuid.location rule that makes ESXi ask whether
// a VM was moved or copied (lab/vmx.py implements the same rule for seeding).

import (
	"bufio"
	"crypto/sha1"
	"fmt"
	"os"
	"strings"
)

type vmxFile struct {
	path  string
	lines []string
	index map[string]int // lower-case key -> line
}

func readVmx(path string) (*vmxFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	v := &vmxFile{path: path, index: map[string]int{}}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if k, _, ok := parseVmxLine(line); ok {
			v.index[strings.ToLower(k)] = len(v.lines)
		}
		v.lines = append(v.lines, line)
	}
	return v, sc.Err()
}

func parseVmxLine(line string) (string, string, bool) {
	t := strings.TrimSpace(line)
	if t == "" || strings.HasPrefix(t, "#") {
		return "", "", false
	}
	k, val, ok := strings.Cut(t, "=")
	if !ok {
		return "", "", false
	}
	return strings.TrimSpace(k), strings.Trim(strings.TrimSpace(val), `"`), true
}

func (v *vmxFile) get(key string) string {
	i, ok := v.index[strings.ToLower(key)]
	if !ok {
		return ""
	}
	_, val, _ := parseVmxLine(v.lines[i])
	return val
}

func (v *vmxFile) has(key string) bool {
	_, ok := v.index[strings.ToLower(key)]
	return ok
}

func (v *vmxFile) set(key, value string) {
	line := fmt.Sprintf("%s = %q", key, value)
	if i, ok := v.index[strings.ToLower(key)]; ok {
		v.lines[i] = line
		return
	}
	v.index[strings.ToLower(key)] = len(v.lines)
	v.lines = append(v.lines, line)
}

func (v *vmxFile) save() error {
	tmp := v.path + ".lab-tmp"
	if err := os.WriteFile(tmp, []byte(strings.Join(v.lines, "\n")+"\n"), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, v.path)
}

func truthy(s string) bool {
	switch strings.ToLower(s) {
	case "true", "yes", "1":
		return true
	}
	return false
}

// formatVmxUUID renders 16 bytes as ESXi writes uuid.bios and uuid.location.
func formatVmxUUID(b []byte) string {
	parts := make([]string, 16)
	for i := 0; i < 16; i++ {
		parts[i] = fmt.Sprintf("%02x", b[i])
	}
	return strings.Join(parts[:8], " ") + "-" + strings.Join(parts[8:], " ")
}

// vmxUUIDToConfig turns "56 4d ...-..." into the config.uuid form 564d....-....
func vmxUUIDToConfig(s string) string {
	h := strings.NewReplacer(" ", "", "-", "").Replace(s)
	if len(h) != 32 {
		return ""
	}
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// uuidLocation is the value ESXi keeps in uuid.location for a .vmx at
// /vmfs/volumes/<volumeID>/<relPath>; a mismatch on power-on means "moved or copied".
func uuidLocation(volumeID, relPath string) string {
	sum := sha1.Sum([]byte("/vmfs/volumes/" + volumeID + "/" + strings.TrimLeft(relPath, "/")))
	return formatVmxUUID(sum[:16])
}

func newVmxBiosUUID() string {
	b := make([]byte, 16)
	if _, err := readRandom(b); err != nil {
		panic(err)
	}
	b[0], b[1] = 0x56, 0x4d
	return formatVmxUUID(b)
}
