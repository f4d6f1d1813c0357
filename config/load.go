package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Load builds the configuration of `popbox serve` from args (the command
// line after "serve") and getenv (os.Getenv when nil): defaults, then the
// YAML file named by --config or POPBOX_CONFIG, then the POPBOX_*
// environment variables (empty ones count as unset), then the flags that
// args set explicitly. Flags are accepted as -name or --name, with the value
// as the next argument or after "="; a list flag given several times adds up.
//
// Every problem found is reported, one per line, naming the setting, the bad
// value and where it came from: malformed numbers, booleans and durations,
// unknown or repeated YAML keys, unknown flags, stray arguments, and values
// [Config.Validate] rejects. For -h or --help Load returns [flag.ErrHelp];
// print [Usage] then.
func Load(args []string, getenv func(string) string) (Config, error) {
	if getenv == nil {
		getenv = os.Getenv
	}

	fs := flag.NewFlagSet("popbox serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	flags := make(map[string]*rawValue, len(options)+1)
	for _, o := range options {
		v := &rawValue{boolean: o.isBool()}
		flags[o.name] = v
		fs.Var(v, o.name, o.usage)
	}
	fileFlag := &rawValue{}
	flags[configFlag] = fileFlag
	fs.Var(fileFlag, configFlag, "YAML configuration file")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return Config{}, flag.ErrHelp
		}
		return Config{}, fmt.Errorf("%v (run with --help to list the settings)", err)
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q: settings are given as --name value (run with --help to list them)", fs.Arg(0))
	}

	l := loader{cfg: Default(), origin: make(map[string]string)}

	// 1. The YAML file.
	path, from := getenv("POPBOX_CONFIG"), "POPBOX_CONFIG"
	if fileFlag.set {
		path, from = fileFlag.last(), "--"+configFlag
	}
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			l.errs = append(l.errs, fmt.Errorf("config file (from %s): %w", from, err))
		} else {
			l.cfg.ConfigFile = path
			l.applyYAML(path, data)
		}
	}

	// 2. The environment.
	for _, o := range options {
		if v := getenv(o.env()); v != "" {
			l.apply(o, v, o.env())
		}
	}

	// 3. Explicit flags, in the order of the table.
	for _, o := range options {
		v := flags[o.name]
		if !v.set {
			continue
		}
		if o.isList() {
			var items []string
			for _, s := range v.vals {
				items = append(items, splitList(s)...)
			}
			l.cfg.setList(o, items)
			l.origin[o.name] = "--" + o.name
			continue
		}
		l.apply(o, v.last(), "--"+o.name)
	}

	l.cfg.normalize()
	l.errs = append(l.errs, l.cfg.check(l.origin)...)
	if len(l.errs) > 0 {
		return Config{}, errors.Join(l.errs...)
	}
	return l.cfg, nil
}

// loader accumulates a configuration, where each setting came from, and
// every error found on the way.
type loader struct {
	cfg    Config
	origin map[string]string // option name -> "--flag", "POPBOX_X" or "config file f, line n"
	errs   []error
}

func (l *loader) apply(o option, raw, from string) {
	if err := o.set(&l.cfg, raw); err != nil {
		l.errs = append(l.errs, fmt.Errorf("%s (%s): %w", o.name, from, err))
		return
	}
	l.origin[o.name] = from
}

// applyYAML applies the keys of a YAML file: a mapping of option keys
// (snake case) to scalars, or for list settings to sequences of scalars or a
// comma-separated string. A null value (a key with nothing after it) leaves
// the setting as it was.
func (l *loader) applyYAML(path string, data []byte) {
	fail := func(line int, format string, args ...any) {
		where := "config file " + path
		if line > 0 {
			where += fmt.Sprintf(", line %d", line)
		}
		l.errs = append(l.errs, fmt.Errorf(where+": "+format, args...))
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		fail(0, "%v", err)
		return
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return // empty file, or only comments
	}
	root := doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return
	}
	if root.Kind != yaml.MappingNode {
		fail(root.Line, "want a mapping of settings (key: value), one per line")
		return
	}
	seen := make(map[string]int)
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], resolveAlias(root.Content[i+1])
		key := k.Value
		if first, dup := seen[key]; dup {
			fail(k.Line, "key %s repeated (first on line %d)", key, first)
			continue
		}
		seen[key] = k.Line
		o, ok := optionByKey(key)
		if !ok {
			fail(k.Line, "unknown key %q%s", key, suggestKey(key))
			continue
		}
		from := fmt.Sprintf("config file %s, line %d", path, v.Line)
		switch v.Kind {
		case yaml.ScalarNode:
			if v.Tag == "!!null" {
				continue
			}
			l.apply(o, v.Value, from)
		case yaml.SequenceNode:
			if !o.isList() {
				fail(v.Line, "%s: want a single value, not a list", key)
				continue
			}
			var items []string
			bad := false
			for _, item := range v.Content {
				item = resolveAlias(item)
				if item.Kind != yaml.ScalarNode {
					fail(item.Line, "%s: list items must be plain values", key)
					bad = true
					break
				}
				if s := strings.TrimSpace(item.Value); s != "" && item.Tag != "!!null" {
					items = append(items, s)
				}
			}
			if !bad {
				l.cfg.setList(o, items)
				l.origin[o.name] = from
			}
		default:
			fail(v.Line, "%s: want a value, not a mapping", key)
		}
	}
}

func resolveAlias(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func optionByKey(key string) (option, bool) {
	for _, o := range options {
		if o.key() == key {
			return o, true
		}
	}
	return option{}, false
}

// suggestKey returns a hint for a YAML key that is spelled like a flag or an
// environment variable.
func suggestKey(key string) string {
	if key == configFlag {
		return " (the config file cannot name another one)"
	}
	k := strings.ToLower(strings.TrimSpace(key))
	k = strings.TrimPrefix(k, "--")
	k = strings.TrimPrefix(k, "popbox_")
	k = strings.ReplaceAll(k, "-", "_")
	if o, ok := optionByKey(k); ok {
		return fmt.Sprintf(" (did you mean %q?)", o.key())
	}
	return ""
}

func (c *Config) setList(o option, items []string) {
	p := o.field(c).(*[]string)
	*p = items
}

// normalize tidies values that have an obvious meaning: a bare port as a
// listen address, upper-case log settings, an empty node name.
func (c *Config) normalize() {
	c.Listen = bareIsPort(c.Listen)
	c.TLSListen = bareIsPort(c.TLSListen)
	c.LogLevel = strings.ToLower(c.LogLevel)
	if c.LogLevel == "warning" {
		c.LogLevel = "warn"
	}
	c.LogFormat = strings.ToLower(c.LogFormat)
	if c.NodeName == "" {
		c.NodeName = defaultNodeName()
	}
}

// bareIsPort turns "3001" into ":3001".
func bareIsPort(addr string) string {
	if addr == "" {
		return addr
	}
	for _, r := range addr {
		if r < '0' || r > '9' {
			return addr
		}
	}
	return ":" + addr
}

// rawValue is a flag.Value that records what was given; parsing happens
// later, in precedence order, with the same rules as the other sources.
type rawValue struct {
	vals    []string
	set     bool
	boolean bool
}

func (v *rawValue) String() string {
	if v == nil || len(v.vals) == 0 {
		return ""
	}
	return v.last()
}

func (v *rawValue) Set(s string) error {
	v.vals = append(v.vals, s)
	v.set = true
	return nil
}

func (v *rawValue) IsBoolFlag() bool { return v.boolean }

func (v *rawValue) last() string { return v.vals[len(v.vals)-1] }

// Usage describes every setting with its flag, environment variable, YAML
// key and default, for `popbox serve --help`.
func Usage() string {
	var b strings.Builder
	b.WriteString(`Usage: popbox serve [flags]

Every setting is a flag (--name value or --name=value), an environment variable
(POPBOX_NAME) and a key of the YAML file named by --config or POPBOX_CONFIG
(name with "_" for "-"). Flags win over the environment, the environment over
the file, the file over the defaults. Lists are comma-separated; durations look
like 500ms, 15s, 2m or 720h; booleans are true or false.

  --config file
        YAML configuration file (env POPBOX_CONFIG)
`)
	def := Default()
	for _, o := range options {
		fmt.Fprintf(&b, "  --%s", o.name)
		if o.metavar != "" {
			fmt.Fprintf(&b, " %s", o.metavar)
		}
		fmt.Fprintf(&b, "\n        %s (env %s, yaml %s", o.usage, o.env(), o.key())
		if d := o.format(&def); d != "" && d != "0" && d != "0s" && d != "false" && o.name != "node-name" {
			if _, isString := o.field(&def).(*string); isString {
				d = strconv.Quote(d)
			}
			fmt.Fprintf(&b, ", default %s", d)
		}
		b.WriteString(")\n")
	}
	return b.String()
}
