"""Lists the built-in backbone presets.

    python scripts/list_presets.py            # all families
    python scripts/list_presets.py gpt2       # names containing "gpt2"
"""

import sys

from lab import console

console.quiet_start()  # TensorFlow's start-up lines, before backbones imports it

import backbones  # noqa: E402


def main(argv):
    pattern = argv[0] if argv else ""
    rows = [(name, meta) for name, meta in sorted(backbones.Backbone.presets.items()) if pattern in name]
    width = max((len(n) for n, _ in rows), default=10)
    for name, meta in rows:
        params = f"{meta['params'] / 1e6:,.0f}M" if meta.get("params") else "-"
        print(f"{name:<{width}}  {meta['class_name']:<16} {params:>7}  {meta['description']}")


if __name__ == "__main__":
    main(sys.argv[1:])
