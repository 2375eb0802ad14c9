"""Converting the compose files in place: published ports, named volumes, bind-mounted data, container names.

Every change is an edit of the file's text at the node it replaces (positions from ruamel's composer), so
comments, quoting, indentation and list style everywhere else stay byte for byte what the team wrote.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from parallel_stacks import labels

from .common import (
    NAME,
    Edit,
    Refused,
    append_item,
    entry,
    evaluate,
    insert_key,
    is_map,
    is_scalar,
    is_seq,
    line_end,
    line_start,
    merged_entry,
    quoted,
    ref,
    split_colons,
    stack_name,
    var_name,
    whole_ref,
)
from .composefiles import ComposeFile, Repository
from .kinds import is_data_path, kind_of

LABEL = labels.WORKTREE  # the package's own spelling (adopt writes it into compose files)


@dataclass
class Published:
    stack_name: str  # the stack.yml service (compose service, or <service>-<container port>)
    host: int
    container: int


class Namer:
    """The variables adoption introduces: the natural name (POSTGRES_PORT) unless the compose files already use it,
    then STACK_<name>; the names an earlier adoption chose are kept."""

    def __init__(self, used: set[str], previous: Mapping[str, str]):
        self.previous = dict(previous)
        self.used = used - set(previous)
        self.chosen: dict[str, str] = {}  # compose variable -> derived value it carries

    def ours(self) -> set[str]:
        return set(self.previous) | set(self.chosen)

    def name(self, source: str) -> str:
        for var, src in list(self.chosen.items()) + list(self.previous.items()):
            if src == source and var not in self.used:
                self.chosen[var] = source
                return var
        for candidate in [source, f"STACK_{source}", *(f"STACK_{source}_{n}" for n in range(2, 100))]:
            if candidate not in self.used and candidate not in self.chosen and candidate not in self.previous:
                self.chosen[candidate] = source
                return candidate
        raise Refused(f"no free variable name for {source}")


@dataclass
class Conversion:
    repo: Repository
    namer: Namer
    by_hand: str  # compose's by-hand project name (volume fallbacks)
    published: list[Published] = field(default_factory=list)
    mounts: dict[str, str] = field(default_factory=dict)  # named volume -> service using it ("" if none)
    data_dirs: dict[str, str] = field(default_factory=dict)  # derived variable -> path relative to the repository
    networks: dict[str, str] = field(default_factory=dict)  # derived variable -> network with a fixed name
    kinds: dict[str, str] = field(default_factory=dict)  # compose service -> kind by image
    taken: dict[int, str] = field(default_factory=dict)
    seen_ports: dict[str, dict[tuple[int, int], str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    shared_binds: list[str] = field(default_factory=list)
    texts: dict[Path, str] = field(default_factory=dict)

    def env(self) -> Mapping[str, str]:
        return self.repo.env


def run(conv: Conversion) -> None:
    for f in conv.repo.files:  # kinds first: the override may set the image
        for name, svc in f.data["services"].items():
            if isinstance(svc, dict) and svc.get("image"):
                conv.kinds[name] = kind_of(svc["image"], conv.repo.env)
    for f in conv.repo.files:
        edits: list[Edit] = []
        check_top(f)
        services = entry(f.node, "services")
        assert services is not None
        for key_node, svc_node in services[1].value:
            name = key_node.value
            svc = f.data["services"].get(name)
            check_service(name, svc, f, conv.repo.root, {c.path.resolve() for c in conv.repo.files})
            where = f"{f.name}: service {name}"
            edits += container_name(f, name, svc, svc_node)
            edits += ports(conv, f, where, name, svc, svc_node)
            edits += service_volumes(conv, f, where, name, svc, svc_node)
        edits += top_volumes(conv, f)
        edits += networks(conv, f)
        conv.texts[f.path] = apply(f, edits)


def apply(f: ComposeFile, edits: list[Edit]) -> str:
    from .common import apply_edits, parse

    text = apply_edits(f.text, edits)
    if edits:
        parse(text, f.name)  # the edited file must still be a compose file
    return text


# ---------------------------------------------------------------- what cannot be offset per copy
def check_service(name: str, svc: Any, f: ComposeFile, root: Path, converted: set[Path]) -> None:
    from .common import parse

    where = f"{f.name}: service {name}"
    if not isinstance(svc, dict):
        raise Refused(f"{where} is not a mapping")
    if svc.get("network_mode") == "host":
        raise Refused(f"{where} uses network_mode: host; its ports are the host's and cannot be offset per copy")
    networks = svc.get("networks")
    if isinstance(networks, dict):
        for net, conf in networks.items():
            if isinstance(conf, dict) and (conf.get("ipv4_address") or conf.get("ipv6_address")):
                raise Refused(f"{where} has a fixed address on network {net}; two copies cannot both have it")
    extends = svc.get("extends")
    if isinstance(extends, dict) and extends.get("file"):
        other = (f.path.parent / str(extends["file"])).resolve()
        if not other.is_file():
            raise Refused(f"{where} extends {extends['file']}, which does not exist")
        if other in converted:
            return  # that file is converted too: the service inherits its converted ports
        base = parse(other.read_text(encoding="utf-8"), str(extends["file"]))[0]["services"].get(extends.get("service"))
        if not isinstance(base, dict):
            raise Refused(f"{where} extends service {extends.get('service')} of {extends['file']}, which it does not define")
        if base.get("ports") or base.get("container_name") or base.get("network_mode") == "host":
            raise Refused(f"{where} extends {extends['file']}, whose ports or container_name adopt cannot rewrite; adopt that file's project first")


def check_top(f: ComposeFile) -> None:
    for net, conf in (f.data.get("networks") or {}).items():
        if not isinstance(conf, dict) or conf.get("external"):
            continue
        configs = (conf.get("ipam") or {}).get("config") or []
        if any(isinstance(c, dict) and c.get("subnet") for c in configs):
            raise Refused(f"{f.name}: network {net} has a fixed subnet; a second copy cannot have the same one")


def networks(conv: Conversion, f: ComposeFile) -> list[Edit]:
    """A network with a fixed `name:` gets one per copy, `${<NETWORK>_NETWORK:-<its name>}` (by hand: the same)."""
    found = entry(f.node, "networks")
    if found is None or not is_map(found[1]):
        return []
    edits = []
    for key, conf in found[1].value:
        data = (f.data.get("networks") or {}).get(key.value) or {}
        name = entry(conf, "name") if is_map(conf) else None
        if data.get("external") or name is None:
            continue
        base = var_name(str(key.value))
        derived = base if base.endswith("_NETWORK") else f"{base}_NETWORK"
        value = str(name[1].value)
        if is_ours(value, conv.namer.ours()):
            found_ref = whole_ref(value)
            assert found_ref is not None
            conv.networks[conv.namer.previous.get(found_ref[0], derived)] = str(key.value)
            continue
        conv.networks[derived] = str(key.value)
        edits.append(Edit(name[1].start_mark.index, name[1].end_mark.index, quoted(ref(conv.namer.name(derived), value), name[1])))
    return edits


# ---------------------------------------------------------------- container_name
def container_name(f: ComposeFile, service: str, svc: Mapping[str, Any], node: Any) -> list[Edit]:
    found = entry(node, "container_name")
    if found is None:
        return []
    if node.flow_style:
        raise Refused(f"{f.name}: service {service} is a flow mapping; write it in block style to drop its container_name")
    key, value = found
    text = f.text
    start, end = line_start(text, key.start_mark.index), line_end(text, value.end_mark.index)
    rest = text[value.end_mark.index : end].strip()
    keep = " " * key.start_mark.column + rest + "\n" if rest.startswith("#") else ""  # a comment beside it stays
    cname = str(svc.get("container_name"))
    if cname == service or svc.get("network_mode"):
        return [Edit(start, end, keep)]  # (with network_mode the service has no networks of its own to alias on)
    networks = entry(node, "networks")
    col = " " * key.start_mark.column
    if networks is None:
        return [Edit(start, end, keep + f"{col}networks:\n{col}  default:\n{col}    aliases:\n{col}      - {cname}\n")]
    return [Edit(start, end, keep), *aliases(f, networks[0], networks[1], cname)]


def aliases(f: ComposeFile, key: Any, nets: Any, alias: str) -> list[Edit]:
    """Edits keeping `alias` resolvable on every network the service joins."""
    text = f.text
    if is_seq(nets):
        flow = braces(", ".join(f"{n.value}: " + braces(f"aliases: [{alias}]") for n in nets.value))
        end = nets.end_mark.index if nets.flow_style or not nets.value else nets.value[-1].end_mark.index
        return [Edit(nets.start_mark.index, end, flow)]
    edits = []
    for net_key, conf in nets.value:
        if is_scalar(conf) and conf.value in ("", "null", "~"):
            if conf.value:
                edits.append(Edit(conf.start_mark.index, conf.end_mark.index, braces(f"aliases: [{alias}]")))
            else:
                colon = text.index(":", net_key.end_mark.index)
                edits.append(Edit(colon + 1, colon + 1, " " + braces(f"aliases: [{alias}]")))
        elif is_map(conf):
            existing = entry(conf, "aliases")
            if existing is None:
                entry_text = f"aliases: [{alias}]"
                edits.append(insert_key(text, conf, [entry_text], entry_text) if conf.value else Edit(conf.start_mark.index, conf.end_mark.index, braces(entry_text)))
            elif alias not in [n.value for n in existing[1].value]:
                edits.append(append_item(text, existing[1], alias))
    return edits


# ---------------------------------------------------------------- ports
def split_short(item: str) -> tuple[str | None, str | None, str, str]:
    """`[ip:][host:]container[/proto]` -> (ip, host, container, proto suffix); variables may hold colons."""
    spec, suffix = item, ""
    match = re.search(r"/([a-z]+)$", item)
    if match:
        spec, suffix = item[: match.start()], "/" + match.group(1)
    if spec.startswith("["):  # [::1]:8080:80
        ip, _, rest = spec[1:].partition("]:")
        parts = split_colons(rest)
        return f"[{ip}]", parts[0] if len(parts) > 1 else None, parts[-1], suffix
    parts = split_colons(spec)
    if len(parts) == 1:
        return None, None, parts[0], suffix
    if len(parts) == 2:
        return None, parts[0], parts[1], suffix
    return ":".join(parts[:-2]), parts[-2], parts[-1], suffix


def number(raw: str, where: str, env: Mapping[str, str], ours: set[str]) -> int:
    """A host or container port as written: `8080`, `${WEB_PORT:-8080}`, `$WEB_PORT` or `${WEB_PORT}` (from .env)."""
    raw = raw.strip()
    value = evaluate(raw, env, ours)
    if value is None:
        found = whole_ref(raw)
        var = found[0] if found else raw
        raise Refused(f"{where}: port {raw} has no default and .env does not set {var}; give it a default")
    value = value.strip()
    if "-" in value:
        raise Refused(f"{where}: port range {value} cannot be offset per copy; list the ports one by one")
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise Refused(f"{where}: port {value!r} is not a port number")
    return int(value)


def published_port(item: Any, where: str, env: Mapping[str, str], ours: set[str] = frozenset()) -> tuple[int, int, str] | None:  # type: ignore[assignment]
    """(host port, container port, proto suffix) of one `ports:` entry; None when it publishes on a random port."""
    if isinstance(item, dict):
        if item.get("published") in (None, ""):
            return None
        proto = str(item.get("protocol", "tcp"))
        return number(str(item["published"]), where, env, ours), number(str(item.get("target", "")), where, env, ours), "" if proto == "tcp" else f"/{proto}"
    _ip, host, container, suffix = split_short(str(item))
    if host is None or host == "":
        if "-" in container:
            raise Refused(f"{where}: port range {container} cannot be offset per copy; list the ports one by one")
        return None
    return number(host, where, env, ours), number(container, where, env, ours), suffix


def is_ours(raw: str, ours: set[str]) -> bool:
    found = whole_ref(raw.strip())
    return found is not None and found[0] in ours


def host_text(raw: str, variable: str, value: int, ours: set[str]) -> str:
    """The new host-port text: `${VAR:-<old>}`; the team's own variable stays inside as the default."""
    raw = raw.strip()
    if is_ours(raw, ours):
        return raw
    found = whole_ref(raw)
    if found is None:
        return ref(variable, str(value))
    inner = raw if raw.startswith("${") else "${" + found[0] + "}"  # unbraced $VAR: braced, the same meaning
    return ref(variable, inner)


def ip_text(ip: str | None, conv: Conversion) -> str | None:
    """The new address: `${BIND_ADDRESS:-<the port's own address, or 127.0.0.1>}`; None: leave it as written."""
    ours = conv.namer.ours()
    if ip is not None and (ip.startswith("[") or whole_ref(ip) is not None and not is_ours(ip, ours) or "$" in ip and not is_ours(ip, ours)):
        return None  # an IPv6 literal, or the team's own variable: theirs
    if ip is not None and is_ours(ip, ours):
        return ip
    return ref(conv.namer.name("BIND_ADDRESS"), ip or "127.0.0.1")


def port_name(conv: Conversion, where: str, service: str, host: int, container: int) -> str:
    seen = conv.seen_ports.setdefault(service, {})
    name = seen.get((host, container))
    if name is None:
        name = stack_name(service) if not seen else f"{stack_name(service)}-{container}"
        if host in conv.taken and conv.taken[host] != name:
            raise Refused(f"{where}: host port {host} is also published by {conv.taken[host]}")
        conv.taken[host] = name
        seen[(host, container)] = name
        conv.published.append(Published(name, host, container))
    return name


def ports(conv: Conversion, f: ComposeFile, where: str, service: str, svc: Mapping[str, Any], node: Any) -> list[Edit]:
    found = entry(node, "ports")
    if found is None:
        if merged_entry(node, "ports") and svc.get("ports"):
            raise Refused(f"{where} takes its ports from a YAML anchor (<<:); adopt cannot give each service its own port variable")
        return []
    items = found[1]
    if not is_seq(items):
        return []
    edits: list[Edit] = []
    for item, item_node in zip(svc.get("ports") or [], items.value):
        ours = conv.namer.ours()
        port = published_port(item, where, conv.env(), ours)
        if port is None:
            continue
        host, container, suffix = port
        name = port_name(conv, where, service, host, container)
        variable = conv.namer.name(f"{var_name(name)}_PORT")
        ours = conv.namer.ours()
        if isinstance(item, dict):
            edits += long_port(conv, f, item_node, variable, host, ours)
            continue
        ip, host_raw, container_raw, _ = split_short(str(item))
        assert host_raw is not None
        address = ip_text(ip, conv)
        new = ":".join([*([address] if address else [ip] if ip else []), host_text(host_raw, variable, host, ours), container_raw]) + suffix
        if new != str(item):
            edits.append(Edit(item_node.start_mark.index, item_node.end_mark.index, quoted(new, item_node)))
    return edits


def long_port(conv: Conversion, f: ComposeFile, node: Any, variable: str, host: int, ours: set[str]) -> list[Edit]:
    """Long syntax: `published` becomes the variable, `host_ip` its default address; every other field stays."""
    edits = []
    published = entry(node, "published")
    assert published is not None
    new = host_text(str(published[1].value), variable, host, ours)
    if new != published[1].value:
        edits.append(Edit(published[1].start_mark.index, published[1].end_mark.index, quoted(new, published[1])))
    host_ip = entry(node, "host_ip")
    if host_ip is None:
        address = ref(conv.namer.name("BIND_ADDRESS"), "127.0.0.1")
        edits.append(insert_key(f.text, node, [f"host_ip: {quoted(address)}"], f"host_ip: {quoted(address)}"))
    else:
        address = ip_text(str(host_ip[1].value), conv)
        if address is not None and address != host_ip[1].value:
            edits.append(Edit(host_ip[1].start_mark.index, host_ip[1].end_mark.index, quoted(address, host_ip[1])))
    return edits


# ---------------------------------------------------------------- volumes and bind mounts
def braces(inner: str) -> str:
    """A YAML flow mapping around `inner` (spelled so: this file holds no template tag)."""
    return "{" + inner + "}"


def is_bind_source(source: str) -> bool:
    return source.startswith((".", "/", "~", "$"))


def service_volumes(conv: Conversion, f: ComposeFile, where: str, service: str, svc: Mapping[str, Any], node: Any) -> list[Edit]:
    found = entry(node, "volumes")
    mounts = svc.get("volumes") or []
    named = set((f.data.get("volumes") or {}).keys())
    for other in conv.repo.files:
        named |= set((other.data.get("volumes") or {}).keys())
    edits: list[Edit] = []
    nodes = found[1].value if found is not None and is_seq(found[1]) else [None] * len(mounts)
    for index, (mount, mount_node) in enumerate(zip(mounts, nodes)):
        if isinstance(mount, str):
            parts = split_colons(mount)
            if len(parts) < 2:
                continue
            source, target, kind_of_mount = parts[0], parts[1], "bind" if is_bind_source(parts[0]) else "volume"
        elif isinstance(mount, dict):
            source, target, kind_of_mount = str(mount.get("source", "")), str(mount.get("target", "")), str(mount.get("type", "volume"))
        else:
            continue
        if kind_of_mount == "volume" and source in named:
            if not conv.mounts.get(source):
                conv.mounts[source] = service
            continue
        if kind_of_mount != "bind":
            continue
        if not is_data_path(target, conv.kinds.get(service, "")):
            conv.shared_binds.append(f"{service}:{source}")
            continue
        if mount_node is None:
            raise Refused(f"{where} takes its volumes from a YAML anchor (<<:); adopt cannot give its data directory a per-copy path")
        edits += data_dir(conv, f, where, service, index, mount, mount_node, source, target)
    return edits


def data_dir(conv: Conversion, f: ComposeFile, where: str, service: str, index: int, mount: Any, node: Any, source: str, target: str) -> list[Edit]:
    """A database's bind-mounted data directory inside the repository: `${<SVC>_DATA_DIR:-<old path>}`, per copy."""
    ours = conv.namer.ours()
    root = conv.repo.root
    path_text = evaluate(source, conv.env(), ours) or ""
    path = Path(path_text).expanduser()
    path = (f.path.parent / path).resolve() if not path.is_absolute() else path.resolve()
    if path != root and root not in path.parents:
        conv.notes.append(f"warning: {where} keeps its data ({target}) in {path_text}, outside the repository: every copy shares it")
        return []
    rel = path.relative_to(root).as_posix()
    existing = whole_ref(source)
    if existing is not None and existing[0] in ours:
        conv.data_dirs[conv.namer.previous.get(existing[0], conv.namer.chosen.get(existing[0], existing[0]))] = rel
        return []
    suffix = "" if not any(k.startswith(f"{var_name(service)}_DATA") for k in conv.data_dirs) else f"_{len(conv.data_dirs) + 1}"
    derived = f"{var_name(service)}_DATA{suffix}_DIR"
    variable = conv.namer.name(derived)
    conv.data_dirs[derived] = rel
    inner = source if not source.startswith("$") or source.startswith("${") else "${" + source[1:] + "}"
    new_source = ref(variable, inner)
    if isinstance(mount, str):
        rest = mount[len(source) :]
        return [Edit(node.start_mark.index, node.end_mark.index, quoted(new_source + rest, node))]
    src = entry(node, "source")
    assert src is not None
    return [Edit(src[1].start_mark.index, src[1].end_mark.index, quoted(new_source, src[1]))]


def top_volumes(conv: Conversion, f: ComposeFile) -> list[Edit]:
    """Named volumes: `name: ${<VOLUME>_VOLUME:-<compose's by-hand name>}` and the worktree label `make stack-nuke` checks."""
    found = entry(f.node, "volumes")
    if found is None or not is_map(found[1]):
        return []
    text = f.text
    edits: list[Edit] = []
    for key, conf in found[1].value:
        vol = str(key.value)
        data = (f.data.get("volumes") or {}).get(vol) or {}
        if data.get("external"):
            conv.notes.append(f"volume {vol} is external: every copy shares it")
            continue
        if not NAME.match(vol):
            raise Refused(f"{f.name}: volume {vol!r} cannot be a stack.yml name (lowercase letters, digits, '-', '_')")
        conv.mounts.setdefault(vol, "")
        volume_var = conv.namer.name(f"{var_name(vol)}_VOLUME")
        label_var = conv.namer.name("STACK_WORKTREE")
        name_value = ref(volume_var, str(data["name"]) if data.get("name") else f"{conv.by_hand}_{vol}")
        label_value = ref(label_var, "")
        empty = is_scalar(conf) or (is_map(conf) and not conf.value)
        if empty:
            if is_map(conf):  # {}
                edits.append(Edit(conf.start_mark.index, conf.end_mark.index, braces(f"name: {quoted(name_value)}, labels: " + braces(f"{LABEL}: {quoted(label_value)}"))))
            else:
                col = " " * (key.start_mark.column + 2)
                at = line_end(text, key.end_mark.index)
                if conf.value:  # `null` / `~` written out
                    edits.append(Edit(conf.start_mark.index, conf.end_mark.index, ""))
                block = f"{col}name: {quoted(name_value)}\n{col}labels:\n{col}  {LABEL}: {quoted(label_value)}\n"
                edits.append(Edit(at, at, block if text[at - 1 : at] == "\n" else "\n" + block))
            continue
        name = entry(conf, "name")
        if name is None:
            edits.append(insert_key(text, conf, [f"name: {quoted(name_value)}"], f"name: {quoted(name_value)}"))
        elif not is_ours(str(name[1].value), conv.namer.ours()):
            edits.append(Edit(name[1].start_mark.index, name[1].end_mark.index, quoted(name_value, name[1])))
        labels = entry(conf, "labels")
        if labels is None:
            edits.append(insert_key(text, conf, ["labels:", f"  {LABEL}: {quoted(label_value)}"], "labels: " + braces(f"{LABEL}: {quoted(label_value)}")))
        elif is_seq(labels[1]):
            if not any(str(n.value).startswith(f"{LABEL}=") for n in labels[1].value):
                edits.append(append_item(text, labels[1], quoted(f"{LABEL}={label_value}")))
        elif is_map(labels[1]) and entry(labels[1], LABEL) is None:
            if labels[1].value:
                edits.append(insert_key(text, labels[1], [f"{LABEL}: {quoted(label_value)}"], f"{LABEL}: {quoted(label_value)}"))
            else:
                edits.append(Edit(labels[1].start_mark.index, labels[1].end_mark.index, braces(f"{LABEL}: {quoted(label_value)}")))
    return edits
