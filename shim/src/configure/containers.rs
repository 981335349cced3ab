//! containers-registries.conf (podman, buildah, skopeo, CRI-O): one `[[registry]]` per mirrored
//! registry with our mirror first, and the node CA in `/etc/containers/certs.d/<mirror>/ca.crt`.
//!
//! Which file is written:
//! - **Main file absent or v2** (the usual case): a drop-in,
//!   `/etc/containers/registries.conf.d/99-specreg.conf`; the main file is never touched and
//!   undo deletes the drop-in. A drop-in `[[registry]]` replaces an earlier table with the same
//!   prefix wholesale, so when the main file or an earlier drop-in already has an entry for one
//!   of our registries (a site mirror, `insecure`, a remapped `location`), that entry is
//!   *carried over* into ours: same keys, our mirror first, its mirrors after. A registry
//!   whose effective entry already lists our mirror first is left out of the drop-in.
//! - **Main file in the v1 format** (`[registries.search]`, `[registries.insecure]`,
//!   `[registries.block]`): v1 and v2 cannot be mixed, so the main file itself is converted to
//!   v2 (search list → `unqualified-search-registries`, insecure/blocked hosts → `[[registry]]`
//!   with `insecure`/`blocked`, other keys, tables and comments kept) and our entries are
//!   added to it; no drop-in. Undo restores the v1 file byte-exact.
//!
//! Mirror locations are path-prefixed: `<mirror>/<registry>` (the proxy sees the registry as
//! the first path component), except docker.io which is mirrored un-prefixed at `<mirror>`.
//! Warnings: later drop-ins that override our prefixes, longer prefixes that bypass the mirror,
//! a user-level `~/.config/containers/registries.conf` (it hides every system drop-in).

use std::path::{Path, PathBuf};

use toml_edit::{DocumentMut, Item, TableLike, Value};

use super::{ConfigureError, FileKind, NewFile, Planner};

pub const MAIN: &str = "/etc/containers/registries.conf";
pub const DROP_IN_DIR: &str = "/etc/containers/registries.conf.d";
pub const DROP_IN_NAME: &str = "99-specreg.conf";
pub const CERTS_D: &str = "/etc/containers/certs.d";

const HEADER: &str = "# Written by `specreg use`: pulls of these registries try the specreg mirror first.\n\
                      # `specreg use --undo` removes this file.\n";

/// `/etc/containers/registries.conf.d/99-specreg.conf`.
pub fn drop_in_path() -> PathBuf {
    Path::new(DROP_IN_DIR).join(DROP_IN_NAME)
}

/// `/etc/containers/certs.d/<host:port>/ca.crt`.
pub fn cert_path(host_port: &str) -> PathBuf {
    Path::new(CERTS_D).join(host_port).join("ca.crt")
}

/// The mirror location for `registry`: `<mirror>/<registry>`, or `<mirror>` for docker.io.
pub fn mirror_location(mirror: &str, registry: &str) -> String {
    if registry == "docker.io" {
        mirror.to_string()
    } else {
        format!("{mirror}/{registry}")
    }
}

/// A registries.conf file the planner reads (real or as-if path, and content).
#[derive(Clone, Debug)]
pub struct ConfFile {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
}

/// The outcome for the two files we may write. `None`: leave the file as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegistriesPlan {
    pub main: Option<Vec<u8>>,
    pub drop_in: Option<Vec<u8>>,
    pub warnings: Vec<String>,
}

/// A `[[registry]]` entry reduced to what we carry over: rendered `key = value` lines.
#[derive(Clone, Debug, Default, PartialEq)]
struct Entry {
    prefix: String,
    location: String,
    keys: Vec<(String, String)>,
    mirrors: Vec<Vec<(String, String)>>,
    /// `location` of each mirror, parallel to `mirrors`.
    mirror_locations: Vec<Option<String>>,
}

fn render_value(v: &Value) -> String {
    let mut v = v.clone();
    v.decor_mut().clear();
    v.to_string()
}

fn render_key(k: &str) -> String {
    toml_edit::Key::new(k).display_repr().to_string()
}

fn parse(file: &ConfFile) -> Result<DocumentMut, ConfigureError> {
    let text = std::str::from_utf8(&file.bytes)
        .map_err(|e| ConfigureError::malformed(&file.path, format!("not UTF-8: {e}")))?;
    text.parse::<DocumentMut>()
        .map_err(|e| ConfigureError::malformed(&file.path, format!("invalid TOML: {}", e.to_string().trim_end())))
}

/// The tables of an array-of-tables item, or of an inline array of inline tables.
fn tables_of<'a>(item: &'a Item, what: &str) -> Result<Vec<&'a dyn TableLike>, String> {
    match item {
        Item::ArrayOfTables(a) => Ok(a.iter().map(|t| t as &dyn TableLike).collect()),
        Item::Value(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_inline_table()
                    .map(|t| t as &dyn TableLike)
                    .ok_or_else(|| format!("{what} holds a non-table"))
            })
            .collect(),
        _ => Err(format!("{what} is not an array of tables")),
    }
}

fn str_key(t: &dyn TableLike, key: &str, what: &str) -> Result<Option<String>, String> {
    match t.get(key) {
        None => Ok(None),
        Some(i) => i
            .as_str()
            .map(|s| Some(s.to_string()))
            .ok_or_else(|| format!("{what}: \"{key}\" is not a string")),
    }
}

/// Every `[[registry]]` entry of a v2 document.
fn entries(doc: &DocumentMut) -> Result<Vec<Entry>, String> {
    let Some(item) = doc.get("registry") else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for t in tables_of(item, "\"registry\"")? {
        let location = str_key(t, "location", "[[registry]]")?.unwrap_or_default();
        let prefix = str_key(t, "prefix", "[[registry]]")?.unwrap_or_else(|| location.clone());
        let mut e = Entry {
            prefix,
            location,
            ..Default::default()
        };
        for (k, v) in t.iter() {
            match (k, v) {
                ("prefix" | "location", _) => {}
                ("mirror", item) => {
                    for m in tables_of(item, "\"registry.mirror\"")? {
                        e.mirror_locations.push(str_key(m, "location", "[[registry.mirror]]")?);
                        e.mirrors.push(
                            m.iter()
                                .filter_map(|(mk, mv)| mv.as_value().map(|v| (render_key(mk), render_value(v))))
                                .collect(),
                        );
                    }
                }
                (k, Item::Value(v)) => e.keys.push((render_key(k), render_value(v))),
                (k, _) => return Err(format!("[[registry]] prefix {:?}: unexpected table {k:?}", e.prefix)),
            }
        }
        out.push(e);
    }
    Ok(out)
}

fn render_entries(entries: &[Entry]) -> String {
    let mut s = String::new();
    for e in entries {
        s.push_str("\n[[registry]]\n");
        s.push_str(&format!("prefix = {}\n", render_value(&Value::from(e.prefix.as_str()))));
        s.push_str(&format!(
            "location = {}\n",
            render_value(&Value::from(e.location.as_str()))
        ));
        for (k, v) in &e.keys {
            s.push_str(&format!("{k} = {v}\n"));
        }
        for m in &e.mirrors {
            s.push_str("\n[[registry.mirror]]\n");
            for (k, v) in m {
                s.push_str(&format!("{k} = {v}\n"));
            }
        }
    }
    s
}

/// `base` (an existing entry for the same prefix, or a fresh one) with our mirror first.
fn with_our_mirror(base: Option<&Entry>, registry: &str, location: &str) -> Entry {
    let mut e = base.cloned().unwrap_or_else(|| Entry {
        prefix: registry.to_string(),
        location: registry.to_string(),
        ..Default::default()
    });
    if e.location.is_empty() {
        e.location = registry.to_string();
    }
    let keep: Vec<usize> = (0..e.mirrors.len())
        .filter(|&i| e.mirror_locations[i].as_deref() != Some(location))
        .collect();
    let ours = vec![("location".to_string(), render_value(&Value::from(location)))];
    e.mirrors = std::iter::once(ours)
        .chain(keep.iter().map(|&i| e.mirrors[i].clone()))
        .collect();
    e.mirror_locations = std::iter::once(Some(location.to_string()))
        .chain(keep.iter().map(|&i| e.mirror_locations[i].clone()))
        .collect();
    e
}

fn is_v1(doc: &DocumentMut) -> bool {
    doc.get("registries").is_some()
}

/// Plans registries.conf. `main` is the main file (`None`: absent); `drop_ins` are the other
/// `*.conf` files of `registries.conf.d` (ours excluded), in any order; `ours` is our drop-in
/// as it is now. Pure: reads nothing but its arguments.
pub fn plan_registries(
    main: Option<&ConfFile>,
    drop_ins: &[ConfFile],
    ours: Option<&[u8]>,
    registries: &[String],
    mirror: &str,
) -> Result<RegistriesPlan, ConfigureError> {
    let mut plan = RegistriesPlan::default();
    let main_doc = main.map(|f| parse(f).map(|d| (f, d))).transpose()?;
    if let Some((f, doc)) = &main_doc {
        if is_v1(doc) {
            plan.main = Some(convert_v1(f, doc, registries, mirror)?);
            return Ok(plan);
        }
    }
    let mut sorted: Vec<&ConfFile> = drop_ins.iter().collect();
    sorted.sort_by(|a, b| a.path.file_name().cmp(&b.path.file_name()));
    // Effective entries before ours: main, then drop-ins sorting before our name.
    let mut sources: Vec<(&Path, Vec<Entry>)> = Vec::new();
    if let Some((f, doc)) = &main_doc {
        sources.push((
            &f.path,
            entries(doc).map_err(|p| ConfigureError::malformed(&f.path, p))?,
        ));
    }
    for f in &sorted {
        let name = f.path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let parsed = parse(f).and_then(|d| {
            if is_v1(&d) {
                return Err(ConfigureError::malformed(
                    &f.path,
                    "drop-in uses the v1 format, which containers rejects",
                ));
            }
            entries(&d).map_err(|p| ConfigureError::malformed(&f.path, p))
        });
        let list = match parsed {
            Ok(l) => l,
            Err(e) => {
                // Not ours to edit: say so, and plan as if it were empty.
                plan.warnings
                    .push(format!("{e} (ignored; podman and cri-o will refuse it too)"));
                continue;
            }
        };
        if name > DROP_IN_NAME {
            for e in &list {
                if registries.contains(&e.prefix) {
                    plan.warnings.push(format!(
                        "{} sorts after {DROP_IN_NAME} and replaces its entry for {:?}: pulls of it will not use the specreg mirror",
                        f.path.display(),
                        e.prefix
                    ));
                }
            }
            continue;
        }
        sources.push((&f.path, list));
    }
    let mut out: Vec<Entry> = Vec::new();
    for reg in registries {
        let loc = mirror_location(mirror, reg);
        let mut effective: Option<&Entry> = None;
        for (path, list) in &sources {
            for e in list {
                if e.prefix == *reg {
                    effective = Some(e);
                }
                if e.prefix.starts_with(&format!("{reg}/")) {
                    plan.warnings.push(format!(
                        "{}: the entry for prefix {:?} is more specific than {reg:?}: pulls under it bypass the specreg mirror",
                        path.display(),
                        e.prefix
                    ));
                }
            }
        }
        if effective.is_some_and(|e| e.mirror_locations.first().and_then(|l| l.as_deref()) == Some(loc.as_str())) {
            continue;
        }
        out.push(with_our_mirror(effective, reg, &loc));
    }
    if out.is_empty() {
        return Ok(plan);
    }
    let text = format!("{HEADER}{}", render_entries(&out));
    check_parses(&text)?;
    if ours != Some(text.as_bytes()) {
        plan.drop_in = Some(text.into_bytes());
    }
    Ok(plan)
}

fn check_parses(text: &str) -> Result<(), ConfigureError> {
    text.parse::<DocumentMut>()
        .map(|_| ())
        .map_err(|e| ConfigureError::Setup(format!("generated registries.conf does not parse (a bug): {e}")))
}

fn string_list(t: &dyn TableLike, key: &str, what: &str) -> Result<Vec<String>, String> {
    match t.get(key) {
        None => Ok(Vec::new()),
        Some(i) => i
            .as_array()
            .ok_or_else(|| format!("{what}.{key} is not an array"))?
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("{what}.{key} holds a non-string"))
            })
            .collect(),
    }
}

const V1_NOTE: &str = "# Converted from the v1 format by `specreg use`; `specreg use --undo` restores the original.\n";

fn comments_of(decor: &toml_edit::Decor) -> String {
    decor
        .prefix()
        .and_then(|p| p.as_str())
        .unwrap_or("")
        .trim_matches('\n')
        .to_string()
}

/// Converts a v1 main file to v2 and adds our entries. Keys and tables other than
/// `[registries.*]` and their comments stay as they were.
fn convert_v1(f: &ConfFile, doc: &DocumentMut, registries: &[String], mirror: &str) -> Result<Vec<u8>, ConfigureError> {
    let bad = |p: String| ConfigureError::malformed(&f.path, p);
    if doc.get("registry").is_some() || doc.get("unqualified-search-registries").is_some() {
        return Err(bad(
            "mixes the v1 [registries.*] tables with v2 keys, which containers rejects".into(),
        ));
    }
    let mut doc = doc.clone();
    let v1_item = doc.remove("registries").expect("is_v1");
    let v1 = v1_item
        .as_table_like()
        .ok_or_else(|| bad("\"registries\" is not a table".into()))?;
    let mut search = Vec::new();
    let mut insecure = Vec::new();
    let mut block = Vec::new();
    let mut comments = vec![comments_of(
        v1_item.as_table().map(|t| t.decor()).unwrap_or(&Default::default()),
    )];
    for (name, item) in v1.iter() {
        let t = item
            .as_table_like()
            .ok_or_else(|| bad(format!("registries.{name} is not a table")))?;
        if let Some(tbl) = item.as_table() {
            comments.push(comments_of(tbl.decor()));
        }
        let list = string_list(t, "registries", &format!("registries.{name}")).map_err(bad)?;
        match name {
            "search" => search = list,
            "insecure" => insecure = list,
            "block" => block = list,
            other => return Err(bad(format!("unknown v1 table [registries.{other}]"))),
        }
    }
    let comments: String = comments
        .iter()
        .filter(|c| !c.trim().is_empty())
        .map(|c| format!("{c}\n"))
        .collect();
    let mut comments_placed = false;
    if !search.is_empty() {
        let key = "unqualified-search-registries";
        doc.insert(key, toml_edit::value(toml_edit::Array::from_iter(search)));
        if let Some(mut k) = doc.key_mut(key) {
            // The v1 tables' comments (often the file's header) go above the search list.
            k.leaf_decor_mut().set_prefix(format!("{comments}{V1_NOTE}"));
            comments_placed = true;
        }
    }
    let mut out: Vec<Entry> = Vec::new();
    for host in insecure.iter().chain(block.iter()) {
        if !out.iter().any(|e| e.prefix == *host) {
            out.push(Entry {
                prefix: host.clone(),
                location: host.clone(),
                ..Default::default()
            });
        }
    }
    for e in &mut out {
        if insecure.contains(&e.prefix) {
            e.keys.push(("insecure".into(), "true".into()));
        }
        if block.contains(&e.prefix) {
            e.keys.push(("blocked".into(), "true".into()));
        }
    }
    for reg in registries {
        let loc = mirror_location(mirror, reg);
        match out.iter().position(|e| e.prefix == *reg) {
            Some(i) => out[i] = with_our_mirror(Some(&out[i]), reg, &loc),
            None => out.push(with_our_mirror(None, reg, &loc)),
        }
    }
    let mut text = doc.to_string();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    if !comments_placed {
        text.push('\n');
        text.push_str(&comments);
        text.push_str(V1_NOTE);
    }
    text.push_str(&render_entries(&out));
    check_parses(&text)?;
    Ok(text.into_bytes())
}

pub(super) fn plan(p: &mut Planner) -> Result<(), ConfigureError> {
    let setup = p.setup;
    let mirror = setup.mirror.to_string();
    let main_path = setup.under_root(MAIN);
    let dir = setup.under_root(DROP_IN_DIR);
    let ours_path = setup.under_root(drop_in_path());
    let read = |path: &Path| -> Result<Option<ConfFile>, ConfigureError> {
        Ok(super::fsutil::read_original(path)?.bytes().map(|b| ConfFile {
            path: path.to_path_buf(),
            bytes: b.to_vec(),
        }))
    };
    let main = read(&main_path)?;
    let mut drop_ins = Vec::new();
    match std::fs::read_dir(&dir) {
        Ok(rd) => {
            for e in rd {
                let e = e.map_err(|e| ConfigureError::io(&dir, "list", e))?;
                let path = e.path();
                if path == ours_path || path.extension().and_then(|x| x.to_str()) != Some("conf") {
                    continue;
                }
                if let Some(f) = read(&path)? {
                    drop_ins.push(f);
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(ConfigureError::io(&dir, "list", e)),
    }
    let ours_now = super::fsutil::read_original(&ours_path)?;
    let result = plan_registries(main.as_ref(), &drop_ins, ours_now.bytes(), &setup.registries, &mirror)?;
    for w in result.warnings {
        p.warn(w);
    }
    if let Some(home) = &setup.job_user_home {
        let user_conf = home.join(".config/containers/registries.conf");
        if setup.under_root(&user_conf).exists() {
            p.warn(format!(
                "{} exists: rootless podman for that user reads it instead of the system files and ignores {DROP_IN_DIR}",
                user_conf.display()
            ));
        }
    }
    let main_new = result.main;
    p.file(Path::new(MAIN), FileKind::RegistriesConf, NewFile::SYSTEM, |_| {
        Ok(main_new)
    })?;
    let drop_new = result.drop_in;
    if drop_new.is_some() || ours_now.bytes().is_some() {
        p.file(&drop_in_path(), FileKind::RegistriesConf, NewFile::SYSTEM, |_| {
            Ok(drop_new)
        })?;
    }
    p.exact(
        &cert_path(&mirror),
        FileKind::ContainersCert,
        &setup.mirror_trust_pem(),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: &str = "127.0.0.1:41234";

    fn regs() -> Vec<String> {
        ["docker.io", "quay.io"].iter().map(|s| s.to_string()).collect()
    }

    fn conf(name: &str, text: &str) -> ConfFile {
        ConfFile {
            path: PathBuf::from(name),
            bytes: text.as_bytes().to_vec(),
        }
    }

    fn text(b: Option<Vec<u8>>) -> String {
        String::from_utf8(b.expect("a change")).unwrap()
    }

    #[test]
    fn fresh_node_gets_a_drop_in_with_path_prefix_mirrors() {
        let p = plan_registries(None, &[], None, &regs(), M).unwrap();
        assert_eq!(p.main, None);
        let t = text(p.drop_in.clone());
        assert!(t.contains("[[registry]]\nprefix = \"docker.io\"\nlocation = \"docker.io\"\n\n[[registry.mirror]]\nlocation = \"127.0.0.1:41234\"\n"), "{t}");
        assert!(t.contains("prefix = \"quay.io\"\nlocation = \"quay.io\"\n\n[[registry.mirror]]\nlocation = \"127.0.0.1:41234/quay.io\"\n"), "{t}");
        // Idempotent: the same drop-in is not rewritten.
        let again = plan_registries(None, &[], Some(t.as_bytes()), &regs(), M).unwrap();
        assert_eq!(again, RegistriesPlan::default());
    }

    #[test]
    fn v2_main_with_comments_is_untouched_and_conflicts_are_carried_over() {
        let main = conf(
            "/etc/containers/registries.conf",
            "# site config\nunqualified-search-registries = [\"docker.io\"]\n\n[[registry]]\n# our quay mirror\nprefix = \"quay.io\"\nlocation = \"quay.io\"\ninsecure = false\n\n[[registry.mirror]]\nlocation = \"quay-mirror.site:5000\"\n",
        );
        let p = plan_registries(Some(&main), &[], None, &regs(), M).unwrap();
        assert_eq!(p.main, None);
        let t = text(p.drop_in);
        let quay = &t[t.find("prefix = \"quay.io\"").unwrap()..];
        assert!(quay.starts_with("prefix = \"quay.io\"\nlocation = \"quay.io\"\ninsecure = false\n\n[[registry.mirror]]\nlocation = \"127.0.0.1:41234/quay.io\"\n\n[[registry.mirror]]\nlocation = \"quay-mirror.site:5000\"\n"), "{t}");
    }

    #[test]
    fn earlier_drop_in_is_carried_over_later_one_is_warned_about() {
        let earlier = conf("/d/50-site.conf", "[[registry]]\nlocation = \"docker.io\"\n[[registry.mirror]]\nlocation = \"hub-cache.site\"\npull-from-mirror = \"digest-only\"\n");
        let later = conf(
            "/d/zz-late.conf",
            "[[registry]]\nprefix = \"quay.io\"\nlocation = \"quay.io\"\n",
        );
        let p = plan_registries(None, &[later, earlier], None, &regs(), M).unwrap();
        let t = text(p.drop_in);
        assert!(t.contains("location = \"127.0.0.1:41234\"\n\n[[registry.mirror]]\nlocation = \"hub-cache.site\"\npull-from-mirror = \"digest-only\"\n"), "{t}");
        assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
        assert!(p.warnings[0].contains("zz-late.conf"));
    }

    #[test]
    fn v1_main_is_converted_in_place() {
        let main = conf(
            "/etc/containers/registries.conf",
            "# distro v1 file\n\n# search these\n[registries.search]\nregistries = ['docker.io', 'quay.io']\n\n[registries.insecure]\nregistries = ['quay.io', 'local.test:5000']\n\n[registries.block]\nregistries = []\n",
        );
        let p = plan_registries(Some(&main), &[], None, &regs(), M).unwrap();
        assert_eq!(p.drop_in, None);
        let t = text(p.main);
        let doc: DocumentMut = t.parse().unwrap();
        assert!(doc.get("registries").is_none(), "{t}");
        assert!(t.contains("# distro v1 file") && t.contains("# search these"), "{t}");
        assert_eq!(doc["unqualified-search-registries"].as_array().unwrap().len(), 2);
        let es = entries(&doc).unwrap();
        let quay = es.iter().find(|e| e.prefix == "quay.io").unwrap();
        assert_eq!(quay.keys, vec![("insecure".to_string(), "true".to_string())]);
        assert_eq!(quay.mirror_locations, vec![Some("127.0.0.1:41234/quay.io".to_string())]);
        assert!(es.iter().any(|e| e.prefix == "local.test:5000"));
        // Second run: the converted file is v2 with our mirrors first: nothing more to do.
        let again = plan_registries(
            Some(&conf("/etc/containers/registries.conf", &t)),
            &[],
            None,
            &regs(),
            M,
        )
        .unwrap();
        assert_eq!(again, RegistriesPlan::default());
    }

    #[test]
    fn malformed_files() {
        let bad = conf("/etc/containers/registries.conf", "[[registry]\nprefix = 1\n");
        let e = plan_registries(Some(&bad), &[], None, &regs(), M)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/etc/containers/registries.conf: invalid TOML"), "{e}");
        let mixed = conf(
            "/etc/containers/registries.conf",
            "[registries.search]\nregistries=[]\n[[registry]]\nlocation=\"x\"\n",
        );
        let e = plan_registries(Some(&mixed), &[], None, &regs(), M)
            .unwrap_err()
            .to_string();
        assert!(e.contains("mixes the v1"), "{e}");
        let wrong = conf("/etc/containers/registries.conf", "registry = 3\n");
        let e = plan_registries(Some(&wrong), &[], None, &regs(), M)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not an array of tables"), "{e}");
        // A broken drop-in of someone else's is a warning, not a stop.
        let p = plan_registries(None, &[conf("/d/10-x.conf", "[[")], None, &regs(), M).unwrap();
        assert!(p.warnings[0].contains("10-x.conf"));
    }
}
