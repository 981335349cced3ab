//! `/etc/hosts`: when the buildset registry is given as an IP address, a name for it
//! (`<ip>\t<alias>`), and with interception the intercepted hosts on the proxy's address
//! (`127.0.0.2\tquay.io gcr.io`), inside a marked block so that a rerun replaces only the
//! block and a reader can see what specreg added. Every other line is kept; undo restores
//! the file byte-exact.

use std::path::Path;

use super::{ConfigureError, FileKind, NewFile, Planner};

pub const PATH: &str = "/etc/hosts";
pub const BEGIN: &str = "# specreg begin";
pub const END: &str = "# specreg end";

fn block(lines: &[(String, String)]) -> String {
    let mut s = format!("{BEGIN}\n");
    for (ip, names) in lines {
        s.push_str(&format!("{ip}\t{names}\n"));
    }
    s.push_str(END);
    s.push('\n');
    s
}

/// Plans `/etc/hosts` (`None` old: absent). `Ok(None)` when the block is already there.
pub fn plan_etc_hosts(old: Option<&[u8]>, ip: &str, alias: &str) -> Result<Option<Vec<u8>>, String> {
    plan_etc_hosts_lines(old, &[(ip.to_owned(), alias.to_owned())])
}

/// Plans `/etc/hosts` with a block of `(address, names)` lines.
pub fn plan_etc_hosts_lines(old: Option<&[u8]>, lines: &[(String, String)]) -> Result<Option<Vec<u8>>, String> {
    let old = old.unwrap_or(b"");
    let text = std::str::from_utf8(old).map_err(|e| format!("not UTF-8: {e}"))?;
    let want = block(lines);
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let begin = lines.iter().position(|l| l.trim_end() == BEGIN);
    let new = match begin {
        Some(b) => {
            let e = lines[b..]
                .iter()
                .position(|l| l.trim_end() == END)
                .map(|i| b + i)
                .ok_or_else(|| format!("has \"{BEGIN}\" without \"{END}\"; fix or remove that block"))?;
            let mut s: String = lines[..b].concat();
            s.push_str(&want);
            s.push_str(&lines[e + 1..].concat());
            s
        }
        None => {
            let mut s = text.to_string();
            if !s.is_empty() && !s.ends_with('\n') {
                s.push('\n');
            }
            s.push_str(&want);
            s
        }
    };
    Ok((new != text).then(|| new.into_bytes()))
}

/// An earlier line outside our block that maps `alias` to another address (the first match wins).
pub fn conflicting_line(old: &[u8], ip: &str, alias: &str) -> Option<String> {
    let text = String::from_utf8_lossy(old);
    let mut inside = false;
    for line in text.lines() {
        match line.trim_end() {
            BEGIN => inside = true,
            END => inside = false,
            l if !inside => {
                let l = l.split('#').next().unwrap_or("");
                let mut fields = l.split_whitespace();
                if let Some(addr) = fields.next() {
                    if addr != ip && fields.any(|n| n == alias) {
                        return Some(line.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    None
}

pub(super) fn plan(p: &mut Planner) -> Result<(), ConfigureError> {
    let setup = p.setup;
    // (address, the names it gets)
    let mut wanted: Vec<(String, Vec<String>)> = Vec::new();
    if let Some(ip) = setup.buildset_ip() {
        wanted.push((ip.to_string(), vec![setup.alias().to_string()]));
    }
    if let Some(i) = setup.intercept.as_ref().filter(|i| !i.hosts.is_empty()) {
        wanted.push((i.addr.to_string(), i.hosts.clone()));
    }
    if wanted.is_empty() {
        return Ok(());
    }
    let lines: Vec<(String, String)> = wanted.iter().map(|(ip, names)| (ip.clone(), names.join(" "))).collect();
    let mut conflicts = Vec::new();
    p.file(Path::new(PATH), FileKind::EtcHosts, NewFile::SYSTEM, |old| {
        if let Some(o) = old {
            for (ip, names) in &wanted {
                for name in names {
                    if let Some(line) = conflicting_line(o, ip, name) {
                        conflicts.push((name.clone(), line));
                    }
                }
            }
        }
        plan_etc_hosts_lines(old, &lines)
    })?;
    for (name, line) in conflicts {
        p.warn(format!("{PATH} already maps {name} elsewhere ({line:?}), and the first match wins"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_once_and_replaces_only_its_block() {
        let old = b"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost";
        let new = plan_etc_hosts(Some(old), "10.1.2.3", "buildset-registry")
            .unwrap()
            .unwrap();
        assert_eq!(
            String::from_utf8(new.clone()).unwrap(),
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n# specreg begin\n10.1.2.3\tbuildset-registry\n# specreg end\n"
        );
        assert_eq!(
            plan_etc_hosts(Some(&new), "10.1.2.3", "buildset-registry").unwrap(),
            None
        );
        let mut with_tail = new.clone();
        with_tail.extend_from_slice(b"192.0.2.9 other\n");
        let moved = plan_etc_hosts(Some(&with_tail), "10.9.9.9", "buildset-registry")
            .unwrap()
            .unwrap();
        assert!(String::from_utf8(moved)
            .unwrap()
            .ends_with("# specreg begin\n10.9.9.9\tbuildset-registry\n# specreg end\n192.0.2.9 other\n"));
        assert!(plan_etc_hosts(Some(b"# specreg begin\n1.2.3.4 x\n"), "10.1.2.3", "a")
            .unwrap_err()
            .contains("without"));
        assert!(plan_etc_hosts(None, "fd00::1", "buildset-registry").unwrap().is_some());
    }

    #[test]
    fn intercepted_hosts_share_one_line() {
        let lines = vec![
            ("10.1.2.3".to_owned(), "buildset-registry".to_owned()),
            ("127.0.0.2".to_owned(), "quay.io gcr.io".to_owned()),
        ];
        let new = plan_etc_hosts_lines(Some(b"127.0.0.1 localhost\n"), &lines).unwrap().unwrap();
        assert_eq!(
            String::from_utf8(new.clone()).unwrap(),
            "127.0.0.1 localhost\n# specreg begin\n10.1.2.3\tbuildset-registry\n127.0.0.2\tquay.io gcr.io\n# specreg end\n"
        );
        assert_eq!(plan_etc_hosts_lines(Some(&new), &lines).unwrap(), None);
    }

    #[test]
    fn finds_conflicts() {
        assert!(conflicting_line(b"10.0.0.1 buildset-registry\n", "10.1.2.3", "buildset-registry").is_some());
        assert!(conflicting_line(b"10.1.2.3 buildset-registry\n", "10.1.2.3", "buildset-registry").is_none());
    }
}
