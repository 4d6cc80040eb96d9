"""Extract a compact Terraform provider schema from a CDK for Terraform prebuilt-bindings wheel.

``terraform init`` cannot fetch providers on our machines, but the prebuilt CDKTF bindings on
PyPI (``cdktf-cdktf-provider-aws``, ``cdktf-cdktf-provider-docker``) are generated from one exact
provider version's schema and ship it as a jsii assembly: every resource and data source is a
class whose docs link the registry page (``.../hashicorp/aws/5.100.0/docs/resources/db_instance
aws_db_instance``), and every settable argument or nested block is a config property whose docs
link its Terraform name (``...#allocated_storage DbInstance#allocated_storage``). Computed-only
attributes are not config properties, so they do not appear here either.

The output, one JSON file per provider, is what tests/deployment/test_terraform_schema.py checks
ops/terraform against:

    {"package": "cdktf-cdktf-provider-aws==20.1.0", "provider": "hashicorp/aws",
     "version": "5.100.0", "provider_config": BODY,
     "resources": {"aws_db_instance": BODY, ...}, "data_sources": {...}}

    BODY = {"arguments": [names], "blocks": {name: BODY}, "required": [names]}  # required: if any
         | {"opaque": true}  # a block nested too deeply for CDKTF to type: contents not checked

Regenerate after changing a pin in ops/terraform/versions.tf: pick the bindings release whose
README ("prebuilt bindings for hashicorp/aws provider version X") names the newest provider
version inside the constraint, as ``terraform init`` would pick. For "~> 5.80" that is 5.100.0,
the last 5.x, in cdktf-cdktf-provider-aws 20.1.0 (21.0.0 is 6.0.0); for kreuzwerker/docker
"~> 3.0", 3.6.2 in cdktf-cdktf-provider-docker 12.0.3, the last bindings release of all:

    python ops/terraform_schema/extract.py cdktf-cdktf-provider-aws==20.1.0
    python ops/terraform_schema/extract.py cdktf-cdktf-provider-docker==12.0.3

The wheel is downloaded into a temporary directory and deleted; pass a local ``.whl`` path instead
of a requirement to skip the download.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

# "Represents a {@link https://registry.terraform.io/providers/hashicorp/aws/5.100.0/docs/
#  resources/db_instance aws_db_instance}." (one line in the assembly)
CLASS_LINK = re.compile(
    r"\{@link https://registry\.terraform\.io/providers/(?P<provider>[^/\s]+/[^/\s]+)/"
    r"(?P<version>[^/\s]+)/docs(?:/(?P<kind>resources|data-sources)/\S+)? (?P<type>\w+)\}"
)
# "Docs at Terraform Registry: {@link https://...#allocated_storage DbInstance#allocated_storage}."
PROPERTY_LINK = re.compile(r"\{@link \S+ \w+#(?P<name>\w+)\}")

KINDS = {
    "cdktf.TerraformResource": "resources",
    "cdktf.TerraformDataSource": "data_sources",
    "cdktf.TerraformProvider": "provider_config",
}


def download(requirement: str, dest: Path) -> Path:
    """``pip download --no-deps`` one exact wheel into ``dest``; returns its path."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "--dest",
            str(dest),
            requirement,
        ],
        check=True,
    )
    (wheel,) = dest.glob("*.whl")
    return wheel


def read_assembly(wheel: Path) -> dict[str, Any]:
    """The jsii assembly (``package/.jsii``) inside the wheel's ``_jsii/*.jsii.tgz``."""
    with zipfile.ZipFile(wheel) as zf:
        (member,) = [n for n in zf.namelist() if n.endswith(".jsii.tgz")]
        with tarfile.open(fileobj=io.BytesIO(zf.read(member)), mode="r:gz") as tf:

            def read(name: str) -> bytes:
                f = tf.extractfile(f"package/{name}")
                if f is None:
                    raise ValueError(f"{wheel.name}: no package/{name} in {member}")
                return f.read()

            assembly = json.loads(read(".jsii"))
            # Newer jsii writes a redirect to a compressed assembly instead of the assembly itself.
            if assembly.get("schema") == "jsii/file-redirect":
                data = read(assembly["filename"])
                if assembly.get("compression") == "gzip":
                    data = gzip.decompress(data)
                assembly = json.loads(data)
    return assembly


def _struct_fqns(type_ref: dict[str, Any]) -> list[str]:
    """Every named type in a jsii type reference (``X``, ``X[]``, ``IResolvable | X[]``...)."""
    if "fqn" in type_ref:
        return [type_ref["fqn"]]
    if "collection" in type_ref:
        return _struct_fqns(type_ref["collection"]["elementtype"])
    if "union" in type_ref:
        return [f for t in type_ref["union"]["types"] for f in _struct_fqns(t)]
    return []


def _body(types: dict[str, Any], config_fqn: str) -> dict[str, Any]:
    """The arguments and nested blocks of one config struct, recursively."""
    arguments: list[str] = []
    blocks: dict[str, Any] = {}
    required: list[str] = []
    for prop in types[config_fqn].get("properties", []):
        docs = prop.get("docs", {})
        link = PROPERTY_LINK.search(f"{docs.get('summary', '')} {docs.get('remarks', '')}")
        if link is None:
            raise ValueError(f"{config_fqn}.{prop['name']}: no registry link names its argument")
        name = link["name"]
        if not prop.get("optional"):
            required.append(name)
        # CDKTF documents a nested block as "<name> block."; other struct-typed properties are
        # attributes holding objects (plugin-framework nested attributes), set with "=".
        if not docs.get("summary", "").endswith(" block."):
            arguments.append(name)
            continue
        structs = [f for f in _struct_fqns(prop["type"]) if types.get(f, {}).get("datatype")]
        blocks[name] = _body(types, structs[0]) if structs else {"opaque": True}
    body: dict[str, Any] = {"arguments": sorted(arguments), "blocks": dict(sorted(blocks.items()))}
    if required:
        body["required"] = sorted(required)
    return body


def extract(assembly: dict[str, Any]) -> dict[str, Any]:
    """The compact schema of every resource, data source and the provider block."""
    types = assembly["types"]
    out: dict[str, Any] = {"resources": {}, "data_sources": {}}
    for fqn, cls in types.items():
        kind = KINDS.get(cls.get("base", ""))
        if kind is None:
            continue
        link = CLASS_LINK.search(cls["docs"]["summary"])
        if link is None:
            raise ValueError(f"{fqn}: no registry link names its Terraform type")
        out.setdefault("provider", link["provider"])
        out.setdefault("version", link["version"])
        if (link["provider"], link["version"]) != (out["provider"], out["version"]):
            raise ValueError(f"{fqn}: links {link['provider']} {link['version']}, not {out}")
        (config,) = [p for p in cls["initializer"]["parameters"] if p["name"] == "config"]
        body = _body(types, config["type"]["fqn"])
        if kind == "provider_config":
            out[kind] = body
        else:
            out[kind][link["type"]] = body
    out["resources"] = dict(sorted(out["resources"].items()))
    out["data_sources"] = dict(sorted(out["data_sources"].items()))
    return out


def write(schema: dict[str, Any], path: Path) -> None:
    """One type per line: small diffs when a provider upgrade changes a few types."""
    lines = ["{"]
    for key in ("package", "provider", "version", "provider_config"):
        lines.append(f" {json.dumps(key)}: {json.dumps(schema[key], sort_keys=True)},")
    for i, section in enumerate(("resources", "data_sources")):
        lines.append(f" {json.dumps(section)}: {{")
        items = list(schema[section].items())
        for j, (name, body) in enumerate(items):
            comma = "," if j < len(items) - 1 else ""
            lines.append(f"  {json.dumps(name)}: {json.dumps(body, sort_keys=True)}{comma}")
        lines.append(" }" + ("," if i == 0 else ""))
    lines.append("}")
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("package", help="an exact requirement (NAME==VERSION) or a local .whl")
    parser.add_argument(
        "-o", "--output", type=Path, help="default: ops/terraform_schema/<provider name>.json"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if args.package.endswith(".whl"):
            wheel = Path(args.package)
        else:
            wheel = download(args.package, Path(tmp))
        assembly = read_assembly(wheel)
    dist, version = wheel.name.split("-")[:2]
    schema = {"package": f"{dist.replace('_', '-')}=={version}", **extract(assembly)}
    output = args.output or HERE / f"{schema['provider'].split('/')[1]}.json"
    write(schema, output)
    print(
        f"{output}: {schema['provider']} {schema['version']}, {len(schema['resources'])} "
        f"resources, {len(schema['data_sources'])} data sources"
    )


if __name__ == "__main__":
    main()
