"""A fake `npx` that runs a fake Allure 3: strict where the real CLI refuses, so that a command line
or a config meshconf writes that the real Allure 3.18.0 would refuse fails the test too.

Provenance (the npm package allure@3.18.0, from allure-framework/allure3; dist files read from the
package as published, their sources named):
- the commands: dist/index.js `cli.register(...)` (packages/cli/src/index.ts) and each command's
  `paths`; `serve` is `open`'s second path;
- `generate`'s options: dist/commands/generate.js (packages/cli/src/commands/generate.ts), parsed by
  clipanion: `--name value`, `--name=value`, short `-c`/`-o`; a boolean option takes no value;
- the config's fields: @allurereport/core dist/config.js validateConfig
  (packages/core/src/config.ts), which refuses any other field; the categories' rules:
  @allurereport/core-api dist/categories.js normalizeCategoriesConfig;
- the refusals, as the real CLI printed them on this machine: clipanion's
  `Unknown Syntax Error: Unsupported option name ("--x").` and `Command not found`, exit 1;
  `Internal Error: The provided Allure config contains unsupported fields: x`, exit 1.
npx (npm exec, npm 11): `--yes`/`-y` before the package spec.

With $FAKE_NPX_OFFLINE set it fails as npx does when npm cannot reach its registry. The fake
writes OUTPUT/index.html, appends one line to the config's historyPath as Allure 3
does, and logs each argv (one JSON line) to $FAKE_NPX_LOG.
"""

import json
import os
import sys
from pathlib import Path

ALLURE_VERSION = "3.18.0"
COMMANDS = {
    "agent", "allure2", "awesome", "check", "classic", "csv", "dashboard", "generate", "history", "jira",
    "log", "open", "serve", "quality-gate", "run", "slack", "testops-plan", "testplan", "watch", "results",
}
# generate's options: name -> takes a value. Aliases as clipanion declares them ("--config,-c").
GENERATE_OPTIONS = {
    "--config": True, "-c": True, "--output": True, "-o": True, "--cwd": True,
    "--report-name": True, "--name": True, "--dump": True, "--open": False, "--port": True,
    "--history-limit": True, "--history-base-url": True, "--hide-labels": True, "--known-issues": True,
}
CONFIG_FIELDS = {
    "name", "output", "open", "port", "hideLabels", "historyPath", "historyBaseUrl", "historyLimit",
    "resolutions", "plugins", "defaultLabels", "variables", "environment", "allowedEnvironments",
    "environments", "appendHistory", "qualityGate", "performance", "allureService", "categories",
    "globalAttachments", "resultsDir", "dump",
}
# The plugins the allure package depends on (its package.json), which a config may name by id.
PLUGINS = {"agent", "allure2", "awesome", "classic", "csv", "dashboard", "jira", "log", "progress",
           "server-reload", "slack"}
COMPAT_KEYS = {"matchedStatuses", "messageRegex", "traceRegex", "flaky"}


class Refused(Exception):
    pass


def main(argv: list[str]) -> int:
    log = os.environ.get("FAKE_NPX_LOG")
    if log:
        with open(log, "a") as out:
            out.write(json.dumps(argv) + "\n")
    try:
        run(argv)
    except Refused as refusal:
        print(refusal, file=sys.stderr)
        return 1
    return 0


def run(argv: list[str]) -> None:
    if os.environ.get("FAKE_NPX_OFFLINE"):  # npm cannot reach its registry to fetch the package
        raise Refused("npm error code ENOTFOUND\nnpm error network request to https://registry.npmjs.org/allure failed")
    rest = list(argv)
    while rest and rest[0] in ("--yes", "-y"):
        rest.pop(0)
    if not rest or rest[0].startswith("-"):
        raise Refused(f"npm error: the fake npx knows --yes only, then a package: {argv}")
    package, *args = rest
    if package != f"allure@{ALLURE_VERSION}":
        raise Refused(f"fake npx: it runs allure@{ALLURE_VERSION} only, not {package}")
    if not args or args[0] not in COMMANDS:
        raise Refused("Unknown Syntax Error: Command not found; did you mean one of: ...")
    if args[0] != "generate":
        raise Refused(f"fake allure: `{args[0]}` is a real command the fake does not model")
    generate(args[1:])


def generate(args: list[str]) -> None:
    options, results = parse(args)
    cwd = Path(options.get("--cwd", os.getcwd()))
    config = read_config(cwd, options.get("--config", options.get("-c")))
    output = Path(options.get("--output", options.get("-o", config.get("output", "allure-report"))))
    dirs = results or ([config["resultsDir"]] if isinstance(config.get("resultsDir"), str) else [])
    if not any(list((cwd / d).glob("*-result.json")) for d in dirs):
        raise Refused(f"No test results directories found matching pattern: {','.join(dirs)}")
    output.mkdir(parents=True, exist_ok=True)
    (output / "index.html").write_text(f"<html>fake Allure {ALLURE_VERSION} report of {', '.join(dirs)}</html>\n")
    if config.get("historyPath"):
        with open(config["historyPath"], "a") as history:
            history.write(json.dumps({"name": config.get("name", "Allure Report"), "testResults": {}}) + "\n")


def parse(args: list[str]) -> tuple[dict[str, str], list[str]]:
    options: dict[str, str] = {}
    positional: list[str] = []
    words = iter(args)
    for word in words:
        if not word.startswith("-"):
            positional.append(word)
            continue
        name, eq, value = word.partition("=")
        if name not in GENERATE_OPTIONS:
            raise Refused(f'Unknown Syntax Error: Unsupported option name ("{name}").')
        if not GENERATE_OPTIONS[name]:
            if eq:
                raise Refused(f'Unknown Syntax Error: Invalid option name ("{word}").')
            options[name] = "true"
            continue
        if not eq:
            value = next(words, "")
            if not value or value.startswith("-"):
                raise Refused(f'Unknown Syntax Error: Not enough arguments to option {name}.')
        options[name] = value
    return options, positional


def read_config(cwd: Path, path: str | None) -> dict:
    if path is None:
        found = cwd / "allurerc.json"
        return json.loads(found.read_text()) if found.is_file() else {}
    resolved = cwd / path
    if not resolved.is_file():
        raise Refused(f"Internal Error: invalid config path {resolved}: not a regular file")
    if resolved.suffix != ".json":
        raise Refused(f"fake allure: reads JSON configs only, not {resolved.name}")
    config = json.loads(resolved.read_text())
    unknown = sorted(set(config) - CONFIG_FIELDS)
    if unknown:
        raise Refused(f"Internal Error: The provided Allure config contains unsupported fields: {', '.join(unknown)}")
    for plugin in config.get("plugins", {}):
        if plugin not in PLUGINS:
            raise Refused(f"Internal Error: Cannot find module '@allurereport/plugin-{plugin}'")
    check_categories(config.get("categories", []))
    return config


def check_categories(categories: object) -> None:
    rules = categories.get("rules", []) if isinstance(categories, dict) else categories
    if categories is False:
        return
    for index, rule in enumerate(rules if isinstance(rules, list) else []):
        if not isinstance(rule, dict):
            raise Refused(f"Internal Error: categories[{index}] must be an object")
        if not isinstance(rule.get("name"), str) or not rule["name"].strip():
            raise Refused(f"Internal Error: categories[{index}].name must be non-empty string")
        compat = COMPAT_KEYS & set(rule)
        if "matchers" in rule and compat:
            raise Refused(f"Internal Error: categories[{index}] mixes canonical keys with compatibility keys")
        if "matchers" not in rule and not compat:
            raise Refused(f"Internal Error: categories[{index}] must define matchers")


def install(bin_dir: Path) -> Path:
    """Write an executable `npx` into bin_dir that runs this fake with this Python."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    npx = bin_dir / "npx"
    root = Path(__file__).resolve().parent.parent
    npx.write_text(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(root)!r})\n"
                   "from tests.fake_npx import main\nsys.exit(main(sys.argv[1:]))\n")
    npx.chmod(0o755)
    return npx
