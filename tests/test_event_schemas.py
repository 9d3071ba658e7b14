"""Every recorded event has a payload schema (Zulip's ``verify_action`` idea).

Statically, every ``record`` call site in ``app/`` names a known event and passes the keys
its schema declares; dynamically, a flow of API calls records events whose stored payloads
all match their schemas, and the flow covers every declared event.
"""
from __future__ import annotations

import ast
import io
from pathlib import Path

from sqlalchemy import select

from app.extensions import db
from app.jobs import service as job_service
from app.models import DomainEvent
from app.services import event_schemas
from app.services.delivery import emit_admin_alert
from tests.test_job_processing import no_worker

ROOT = Path(__file__).resolve().parent.parent
API = "/api/v1"


def _flow(app, client, admin, editor) -> None:
    """The API calls of the contract that record events, one of each kind at least."""
    r = client.post(f"{API}/episodes", headers=editor.headers,
                    json={"title": "Schemas", "episode_number": 1, "categories": ["a"]})
    assert r.status_code == 201, r.json
    episode_id = r.json["id"]
    assert client.patch(f"{API}/episodes/{episode_id}", headers=editor.headers,
                        json={"title": "Schemas 2"}).status_code == 200
    assert client.post(f"{API}/episodes/{episode_id}/publish",
                       headers=admin.headers).status_code in (200, 201)
    r = client.post(f"{API}/episodes/{episode_id}/files", headers=editor.headers,
                    data={"file": (io.BytesIO(b"cue at 0:42"), "notes.txt")},
                    content_type="multipart/form-data")
    assert r.status_code == 201, r.json
    file_id = r.json["id"]
    url = client.get(f"{API}/files/{file_id}/download-url", headers=editor.headers).json["url"]
    assert client.get(url).status_code == 200
    for params in ({"steps": 2}, {"fail_times": 100}):  # completed; retried then failed
        r = client.post(f"{API}/jobs", headers=editor.headers,
                        json={"type": "noop", "episode_id": episode_id, "params": params})
        assert r.status_code == 201, r.json
    failed = r.json["id"]
    assert client.post(f"{API}/jobs/{failed}/retry", headers=editor.headers).status_code in (200, 202)
    with no_worker(app):
        r = client.post(f"{API}/jobs", headers=editor.headers,
                        json={"type": "noop", "episode_id": episode_id})
        assert client.post(f"{API}/jobs/{r.json['id']}/cancel",
                           headers=editor.headers).status_code == 200
    assert client.post(f"{API}/notifications", headers=admin.headers, json={
        "user_ids": [editor.id], "title": "Hello", "type": "episode:updated"}).status_code == 202
    assert client.post(f"{API}/notifications/read-all", headers=editor.headers).status_code == 200
    r = client.post(f"{API}/auth/register", json={
        "email": "schemas@example.com", "password": "password123", "name": "Schemas"})
    assert r.status_code == 201, r.json
    newcomer = r.json["user"]["id"]
    for change in ({"role": "editor"}, {"is_active": False}, {"is_active": True}):
        assert client.patch(f"{API}/users/{newcomer}", headers=admin.headers,
                            json=change).status_code == 200
    assert client.post(f"{API}/realtime/broadcast", headers=admin.headers, json={
        "namespace": "/feed", "event": "maintenance", "data": {"at": "noon"}}).status_code == 202
    with app.app_context():
        job_service.record_processor_started(hostname="test-host", concurrency=2, max_concurrent=2)
        emit_admin_alert("stuck", {"event_id": 1})
    assert client.delete(f"{API}/files/{file_id}", headers=editor.headers).status_code == 204
    assert client.delete(f"{API}/episodes/{episode_id}", headers=editor.headers).status_code == 204


# ---- static: every record call site in app/ -------------------------------------------

# Call sites whose event name is not theirs to know: each forwards its caller's name, and
# the callers are checked instead (``WRAPPERS``), or the name is the client's choice.
FORWARDING = {
    ("app/jobs/service.py", "_record"),  # _record(job, "job_...", ...): checked as a wrapper
    ("app/services/files.py", "add_file"),  # event_name="file_uploaded" by default
    ("app/services/events.py", "broadcast"),  # POST /realtime/broadcast: BY_RESOURCE_TYPE
    ("app/services/events.py", "record_change"),  # record() with an episode's or file's columns
    ("app/services/users.py", "_record"),  # _record(user, "user_...", ...): checked as a wrapper
}
# The functions that record: ``record`` itself and ``record_change`` (name first, payload=).
RECORDERS = ("record", "record_change")


def _modules() -> dict[str, ast.Module]:
    return {str(path.relative_to(ROOT)): ast.parse(path.read_text(), str(path))
            for path in sorted((ROOT / "app").rglob("*.py"))}


def _constants(modules: dict[str, ast.Module]) -> dict[str, str]:
    """Module-level ``NAME = "string"`` anywhere in app/ (event name constants)."""
    found = {}
    for tree in modules.values():
        for node in tree.body:
            if (isinstance(node, ast.Assign) and len(node.targets) == 1
                    and isinstance(node.targets[0], ast.Name)
                    and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
                found[node.targets[0].id] = node.value.value
    return found


def _functions(tree: ast.Module) -> dict[str, ast.FunctionDef]:
    return {n.name: n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}


def _callee(call: ast.Call) -> str | None:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)


def _innermost(tree: ast.Module) -> dict[ast.AST, ast.FunctionDef]:
    """Each node's innermost enclosing function."""
    owner: dict[ast.AST, ast.FunctionDef] = {}

    def visit(node: ast.AST, fn: ast.FunctionDef | None) -> None:
        for child in ast.iter_child_nodes(node):
            if fn is not None:
                owner[child] = fn
            visit(child, child if isinstance(child, ast.FunctionDef) else fn)
    visit(tree, None)
    return owner


def _dict_keys(node: ast.AST, fn: ast.FunctionDef | None, functions, call=None
               ) -> tuple[set[str], bool]:
    """The keys a payload expression makes, and whether more may come (a spread, an update)."""
    if isinstance(node, ast.Dict):
        keys, open_ended = set(), False
        for key in node.keys:
            if isinstance(key, ast.Constant):
                keys.add(key.value)
            elif key is None:  # **spread
                open_ended = True
            elif isinstance(key, ast.Name) and call is not None:  # a parameter naming the key
                value = _argument(functions[fn.name] if fn else None, call, key.id)
                if isinstance(value, ast.Constant):
                    keys.add(value.value)
                else:
                    open_ended = True
            else:
                open_ended = True
        return keys, open_ended
    if isinstance(node, ast.Call) and _callee(node) in functions:  # a local payload builder
        builder = functions[_callee(node)]
        returns = [n.value for n in ast.walk(builder) if isinstance(n, ast.Return) and n.value]
        if len(returns) == 1:
            return _dict_keys(returns[0], builder, functions, call=node)
    if isinstance(node, ast.Name) and fn is not None:  # payload = ...; payload.update(...)
        assigned = [n.value for n in ast.walk(fn) if isinstance(n, ast.Assign)
                    and any(isinstance(t, ast.Name) and t.id == node.id for t in n.targets)]
        updated = any(isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                      and n.func.attr == "update" and getattr(n.func.value, "id", None) == node.id
                      for n in ast.walk(fn))
        if len(assigned) == 1:
            keys, open_ended = _dict_keys(assigned[0], fn, functions)
            return keys, open_ended or updated
    return set(), True


def _argument(fn: ast.FunctionDef | None, call: ast.Call, name: str) -> ast.AST | None:
    """The expression ``call`` passes for parameter ``name`` of ``fn`` (or its default)."""
    if fn is None:
        return None
    for keyword in call.keywords:
        if keyword.arg == name:
            return keyword.value
    params = [a.arg for a in fn.args.args]
    if name in params and params.index(name) < len(call.args):
        return call.args[params.index(name)]
    defaults = dict(zip(params[len(params) - len(fn.args.defaults):], fn.args.defaults,
                        strict=True))
    kw_defaults = {a.arg: d for a, d in zip(fn.args.kwonlyargs, fn.args.kw_defaults, strict=True)}
    return defaults.get(name, kw_defaults.get(name))


def _spec_payload_keys(spec: ast.FunctionDef) -> set[str]:
    """The keys jobs.py ``_spec`` puts in every job event's payload (besides its kwargs)."""
    for node in ast.walk(spec):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "payload":
                    return _dict_keys(value, None, {})[0]
    raise AssertionError("jobs._spec builds no payload")


def _sites() -> list[tuple[str, int, str | None, set[str], bool]]:
    """Every event a call site in app/ records: (where, line, name, payload keys, open)."""
    modules = _modules()
    constants = _constants(modules)
    jobs_functions = _functions(modules["app/jobs/service.py"])
    job_keys = _spec_payload_keys(jobs_functions["_spec"])
    files_functions = _functions(modules["app/services/files.py"])
    sites = []
    for path, tree in modules.items():
        functions, owner = _functions(tree), _innermost(tree)
        for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
            fn = owner.get(call)
            callee = _callee(call)
            where = f"{path}:{call.lineno}"
            if callee in RECORDERS and call.args:
                name_node = call.args[0]
                if (path, fn.name if fn else None) in FORWARDING:
                    continue
                name = (name_node.value if isinstance(name_node, ast.Constant)
                        else constants.get(getattr(name_node, "id", "")))
                payload = next((k.value for k in call.keywords if k.arg == "payload"), None)
                keys, open_ended = (_dict_keys(payload, fn, functions) if payload is not None
                                    else (set(), False))
                sites.append((where, call.lineno, name, keys, open_ended))
            elif callee in ("_record", "_spec") and path == "app/jobs/service.py" and fn and \
                    fn.name not in ("_record", "_spec"):
                name = call.args[1].value if isinstance(call.args[1], ast.Constant) else None
                keys = job_keys | {k.arg for k in call.keywords if k.arg}
                sites.append((where, call.lineno, name, keys, False))
            elif callee == "_record" and path == "app/services/users.py" and fn and \
                    fn.name != "_record":
                named = call.args[1]  # a name, or one of two: "a" if cond else "b"
                names = [named.body, named.orelse] if isinstance(named, ast.IfExp) else [named]
                payload = next((k.value for k in call.keywords if k.arg == "payload"), None)
                keys, open_ended = (_dict_keys(payload, fn, functions) if payload is not None
                                    else (set(), False))
                for node in names:
                    name = node.value if isinstance(node, ast.Constant) else None
                    sites.append((where, call.lineno, name, keys | {"user_id"}, open_ended))
            elif callee == "user_event" and call.args and isinstance(call.args[0], ast.Constant):
                builder = _functions(modules["app/services/notifications/push.py"])["user_event"]
                spec = next(n.value for n in ast.walk(builder) if isinstance(n, ast.Return))
                payload = next(v for k, v in zip(spec.keys, spec.values, strict=True)
                               if isinstance(k, ast.Constant) and k.value == "payload")
                keys, open_ended = _dict_keys(payload, builder, {})
                sites.append((where, call.lineno, call.args[0].value, keys, open_ended))
            elif callee == "batch_events" and call.args and isinstance(call.args[0], ast.Constant):
                sites.append((where, call.lineno, call.args[0].value, {"_batch"}, False))
            elif callee in ("store_file", "add_file") and not (
                    path == "app/services/files.py" and fn and fn.name == "store_file"):
                name_node = _argument(files_functions["add_file"], call, "event_name")
                extra = _argument(files_functions["add_file"], call, "extra_payload")
                keys, open_ended = _dict_keys(ast.parse(
                    "_file_payload(file, 'uploaded_by', actor)", mode="eval").body, None,
                    files_functions)
                if isinstance(extra, ast.Dict):
                    more, open_ended = _dict_keys(extra, None, {})
                    keys |= more
                name = name_node.value if isinstance(name_node, ast.Constant) else None
                sites.append((where, call.lineno, name, keys, open_ended))
    return sites


def test_every_record_call_site_names_a_known_event_with_its_schema_keys():
    sites = _sites()
    assert len(sites) >= 20, sites  # the walk found the call sites (not an empty pass)
    bad = []
    for where, _line, name, keys, open_ended in sites:
        schema = event_schemas.schema_for(name) if name else None
        if schema is None:
            bad.append(f"{where}: event {name!r} has no schema")
            continue
        required, optional, schema_open = event_schemas.keys_of(schema)
        if keys - required - optional and not schema_open:
            bad.append(f"{where}: {name} passes keys outside its schema: "
                       f"{sorted(keys - required - optional)}")
        if not open_ended and required - keys:
            bad.append(f"{where}: {name} misses {sorted(required - keys)}")
    assert bad == []
    assert {name for _w, _l, name, _k, _o in sites} == set(event_schemas.SCHEMAS)


def test_forwarding_sites_are_the_declared_ones():
    """A new call site with a computed event name must be declared (and its callers checked)."""
    modules = _modules()
    constants = _constants(modules)
    forwarding = set()
    for path, tree in modules.items():
        owner = _innermost(tree)
        for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
            if _callee(call) in RECORDERS and call.args:
                name = call.args[0]
                if not (isinstance(name, ast.Constant) or getattr(name, "id", None) in constants):
                    forwarding.add((path, owner[call].name))
    assert forwarding == FORWARDING


# ---- dynamic: the payloads a flow of API calls stores ------------------------------------


def test_every_payload_recorded_by_a_flow_matches_its_schema(app, client, admin, editor):
    _flow(app, client, admin, editor)
    with app.app_context():
        rows = db.session.execute(select(DomainEvent.name, DomainEvent.resource_type,
                                         DomainEvent.payload).order_by(DomainEvent.id)).all()
    bad = [p for name, resource_type, payload in rows
           for p in event_schemas.problems(name, payload, resource_type)]
    assert bad == []
    assert {name for name, _rt, _p in rows} >= set(event_schemas.SCHEMAS)  # the flow covers all


def test_a_payload_off_its_schema_is_reported():
    good = {"job_id": 1, "episode_id": 2, "type": "noop", "created_by": 3}
    assert event_schemas.problems("job_created", good) == []
    assert event_schemas.problems("job_created", {**good, "extra": 1}) == [
        "job_created: unexpected ['extra']"]
    assert event_schemas.problems("job_created", {**good, "job_id": True}) == [
        "job_created: job_id=True is not <class 'int'>"]
    assert event_schemas.problems("job_cancelled", {**good, "recovered": True}) == []
    assert event_schemas.problems("no_such_event", {}) != []
