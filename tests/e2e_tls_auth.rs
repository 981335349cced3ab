//! TLS and authentication end to end (issue #4): `specreg serve` as operators run
//! it (TLS with a generated CA, users, Docker's token flow, the connection info
//! JSON) against docker, podman, skopeo, curl and openssl.
//!
//! In the positive cases clients get their connection details (host, port,
//! username, password, CA) only from the JSON info file the server writes. Every
//! round trip is proven by digest. Refusals are checked for their exact status,
//! error code and challenge.

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use support::*;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn p(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// The command failed and its output names one of `any_of` (case-insensitive).
fn assert_fails_with(o: &Output, any_of: &[&str], what: &str) {
    assert!(!o.success(), "{what}: unexpectedly succeeded\n{}", o.describe());
    let text = format!("{}\n{}", o.stdout, o.stderr).to_lowercase();
    assert!(
        any_of.iter().any(|w| text.contains(&w.to_lowercase())),
        "{what}: the error names none of {any_of:?}\n{}",
        o.describe()
    );
}

/// `errors[0].code` of a registry error body.
fn error_code(r: &HttpResponse) -> String {
    let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    v["errors"][0]["code"].as_str().unwrap_or_default().to_string()
}

fn assert_status(r: &HttpResponse, status: u16, what: &str) {
    assert_eq!(r.status, status, "{what}:\n{}", r.describe());
    assert_eq!(
        r.header("docker-distribution-api-version"),
        Some("registry/2.0"),
        "{what}: Docker-Distribution-Api-Version\n{}",
        r.describe()
    );
}

/// 401 UNAUTHORIZED with exactly this bearer challenge.
fn assert_challenge(r: &HttpResponse, realm: &str, scope: Option<&str>, error: Option<&str>, what: &str) {
    assert_status(r, 401, what);
    let mut want = format!("Bearer realm=\"{realm}\",service=\"specreg\"");
    if let Some(s) = scope {
        want.push_str(&format!(",scope=\"{s}\""));
    }
    if let Some(e) = error {
        want.push_str(&format!(",error=\"{e}\""));
    }
    assert_eq!(r.header("www-authenticate"), Some(want.as_str()), "{what}: challenge\n{}", r.describe());
    if !r.body.is_empty() {
        assert_eq!(error_code(r), "UNAUTHORIZED", "{what}: error code\n{}", r.describe());
    }
}

/// 403 DENIED.
fn assert_denied(r: &HttpResponse, what: &str) {
    assert_status(r, 403, what);
    assert_eq!(error_code(r), "DENIED", "{what}: error code\n{}", r.describe());
    assert!(r.header("www-authenticate").is_none(), "{what}: a 403 needs no challenge\n{}", r.describe());
}

/// Percent-encoding for query strings and forms.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `GET /auth/token?service=specreg&scope=SCOPE` with `authorization` (if any).
fn token_request(reg: &Registry, authorization: Option<&str>, scope: &str) -> HttpResponse {
    let path = format!("/auth/token?service=specreg&scope={}", enc(scope));
    let h: Vec<(&str, &str)> = authorization.map(|a| vec![("Authorization", a)]).unwrap_or_default();
    reg.send_exact("GET", &path, &h, b"")
}

/// A token for `scope` with Basic `user:password`; checks the grant's shape.
fn token(reg: &Registry, user: &str, password: &str, scope: &str) -> String {
    let r = token_request(reg, Some(&basic_auth(user, password)), scope);
    assert_eq!(r.status, 200, "token for {user} {scope}:\n{}", r.describe());
    let v: Value = serde_json::from_slice(&r.body).expect("token JSON");
    let t = v["token"].as_str().expect("token").to_string();
    assert_eq!(v["access_token"].as_str(), Some(t.as_str()), "access_token = token:\n{v:#}");
    assert!(v["expires_in"].as_u64().is_some(), "expires_in:\n{v:#}");
    assert!(v["issued_at"].as_str().is_some_and(|s| s.len() >= 20), "issued_at:\n{v:#}");
    assert_eq!(t.split('.').count(), 3, "a JWT: {t}");
    t
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

/// Start an upload: the request every push begins with.
fn post_upload(reg: &Registry, repo: &str, authorization: Option<&str>) -> HttpResponse {
    let h: Vec<(&str, &str)> = authorization.map(|a| vec![("Authorization", a)]).unwrap_or_default();
    reg.send_exact("POST", &format!("/v2/{repo}/blobs/uploads/"), &h, b"")
}

fn get_manifest(reg: &Registry, repo: &str, reference: &str, authorization: Option<&str>) -> HttpResponse {
    let mut h = vec![("Accept", MANIFEST_ACCEPT)];
    if let Some(a) = authorization {
        h.push(("Authorization", a));
    }
    reg.send_exact("GET", &format!("/v2/{repo}/manifests/{reference}"), &h, b"")
}

/// `skopeo copy` with TLS verification on (cert dirs and creds in `extra`); no
/// status check.
fn skopeo_copy(sk: &Skopeo, extra: &[&str], src: &str, dst: &str) -> Output {
    run(sk.cmd().arg("copy").args(extra).args([src, dst]))
}

/// `skopeo copy --digestfile`; must succeed; returns the digest.
fn skopeo_copy_digest(sk: &Skopeo, work: &Path, extra: &[&str], src: &str, dst: &str) -> String {
    let f = work.join(format!("{}.digest", unique_marker("d")));
    let mut args = extra.to_vec();
    args.extend(["--digestfile", p(&f)]);
    let o = skopeo_copy(sk, &args, src, dst);
    assert!(o.success(), "skopeo copy failed\n{}", o.describe());
    fs::read_to_string(&f).expect("digestfile").trim().to_string()
}

/// Copy `reference` (TLS, `extra` for cert dir/creds) into a fresh OCI layout and
/// check it is `img`, blob for blob.
fn assert_pulls_back(sk: &Skopeo, extra: &[&str], reference: &str, dst: &Path, img: &BuiltImage, src: &Path) {
    let o = skopeo_copy(sk, extra, reference, &format!("oci:{}:copy", dst.display()));
    assert!(o.success(), "skopeo copy back failed\n{}", o.describe());
    let out = OciLayout::open(dst);
    let desc = out.resolve("copy");
    assert_eq!(desc.digest, img.manifest.digest, "manifest digest after the round trip");
    assert_eq!(out.blob(&desc.digest), img.manifest_bytes);
    let src = OciLayout::open(src);
    for d in img.blob_digests() {
        assert_eq!(out.blob(&d), src.blob(&d), "blob {d} differs after the round trip");
    }
}

fn curl(args: &[&str]) -> Output {
    run(Command::new(tool("curl")).args(["-sS", "--max-time", "60"]).args(args))
}

fn openssl(args: &[&str]) -> String {
    run_ok(Command::new(tool("openssl")).args(args))
}

fn docker_inspect(d: &Dockerd, image: &str, format: &str) -> String {
    run_ok(d.docker().args(["image", "inspect", "--format", format, image]))
        .trim()
        .to_string()
}

/// Turn a locally built OCI layout into an image inside the private dockerd.
fn load_into_docker(d: &Dockerd, sk: &Skopeo, layout: &Path, tag: &str, name: &str) {
    let archive = d.dir().join(format!("{}.tar", unique_marker("archive")));
    sk.copy(
        &[],
        &format!("oci:{}:{tag}", layout.display()),
        &format!("docker-archive:{}:{name}", archive.display()),
    );
    let out = run_ok(d.docker().arg("load").arg("-i").arg(&archive));
    assert!(out.contains(name), "docker load output: {out}");
    fs::remove_file(&archive).unwrap();
}

/// The `digest: sha256:... size: N` that `docker push` prints for `tag`.
fn pushed_digest(push_output: &str, tag: &str) -> String {
    let line = push_output
        .lines()
        .find(|l| l.starts_with(&format!("{tag}: digest: sha256:")))
        .unwrap_or_else(|| panic!("no digest line in docker push output:\n{push_output}"));
    line.split_whitespace().nth(2).unwrap().to_string()
}

/// The registry answers an authenticated `GET /v2/` (it survived whatever came before).
fn assert_still_serving(reg: &Registry, what: &str) {
    let r = reg.get("/v2/", &[]);
    assert_eq!(r.status, 200, "after {what}, GET /v2/ with the info file's credentials:\n{}", r.describe());
}

// ---------------------------------------------------------------------------
// 1. docker: the "done when"
// ---------------------------------------------------------------------------

/// `specreg serve` with nothing but `--data` and `--listen`; a private dockerd that
/// trusts the CA through `certs.d/<host:port>/ca.crt`, `docker login` with the
/// JSON's username and password, push, rmi, pull; digests compared with what
/// the registry serves.
///
/// dockerd never verifies certificates of registries on 127.0.0.0/8 (it treats
/// them as insecure), so the registry listens on this host's non-loopback
/// address: only then does the test prove that docker checks the CA.
#[test]
fn docker_login_push_pull_with_only_the_connection_info() {
    let ip = host_ipv4().map(|ip| ip.to_string());
    if ip.is_none() {
        eprintln!(
            "warning: this host has no non-loopback IPv4 address; dockerd skips certificate \
             verification for 127.0.0.0/8, so this run cannot prove docker trusts the CA"
        );
    }
    let listen_ip = ip.clone().unwrap_or_else(|| "127.0.0.1".into());
    let reg = Registry::start_specreg_with(&["--listen", &format!("{listen_ip}:0")]);
    eprintln!("registry: {}", reg.announce());
    let info = reg.info().clone();
    assert_eq!(info.path, reg.data.join("buildset_registry.json"), "default info file location");
    assert_eq!(info.host, listen_ip, "host in the info file must be the listen IP");
    let host = info.registry();
    assert_eq!(host, reg.addr(), "info host:port vs the announced address");
    assert_eq!(info.username, "zuul", "the default user");

    let certs_d = TempTree::new("certsd");
    let d = Dockerd::start_with_certs_d(&[], certs_d.path());
    let sk = Skopeo::new();
    let login = |d: &Dockerd| {
        run_input(
            d.docker().args(["login", "--username", &info.username, "--password-stdin", &host]),
            info.password.as_bytes(),
        )
    };

    if ip.is_some() {
        // Not trusted yet: docker must refuse the certificate.
        let o = login(&d);
        assert_fails_with(&o, &["x509", "certificate"], "docker login before trusting the CA");
        assert_still_serving(&reg, "docker refused its certificate");
    }

    write_ca_dir(&certs_d.join(&host), &info.cert);
    let o = login(&d);
    assert!(o.success() && o.stdout.contains("Login Succeeded"), "docker login\n{}", o.describe());

    let work = TempTree::new("docker-tls");
    let src = work.join("src");
    let img = single_arch_layout(&src, "v1", 2 << 20);
    load_into_docker(&d, &sk, &src, "v1", "e2e-local/tls:v1");
    let target = format!("{host}/e2e/tls-docker:1");
    run_ok(d.docker().args(["tag", "e2e-local/tls:v1", &target]));
    let out = run_ok(d.docker().args(["push", &target]));
    let pushed = pushed_digest(&out, "1");

    // The registry (asked with the CA and Basic credentials) serves what docker pushed.
    let served = reg.manifest("e2e/tls-docker", "1");
    assert_eq!(served.digest, pushed, "registry's digest for the tag vs docker push's");
    assert_eq!(served.media_type, DOCKER_MANIFEST);
    assert_eq!(served.json["config"]["digest"], img.config.digest.as_str());
    reg.assert_complete("e2e/tls-docker", &served);
    assert_eq!(reg.blob("e2e/tls-docker", &img.config.digest), img.config_bytes);

    run_ok(d.docker().args(["rmi", "--force", &target, "e2e-local/tls:v1"]));
    assert!(!run(d.docker().args(["image", "inspect", &img.config.digest])).success(), "image left after rmi");
    let out = run_ok(d.docker().args(["pull", &target]));
    assert!(out.contains(&format!("Digest: {pushed}")), "docker pull output:\n{out}");
    assert_eq!(docker_inspect(&d, &target, "{{.Id}}"), img.config.digest, "pulled image ID");
    assert_eq!(
        docker_inspect(&d, &target, "{{range .RepoDigests}}{{.}} {{end}}"),
        format!("{host}/e2e/tls-docker@{pushed}"),
        "RepoDigests after pull"
    );
    let layers = docker_inspect(&d, &target, "{{range .RootFS.Layers}}{{.}} {{end}}");
    assert_eq!(layers.split_whitespace().collect::<Vec<_>>(), img.diff_ids, "unpacked layers");

    // Logged out, the same pull is refused as unauthorized.
    run_ok(d.docker().args(["logout", &host]));
    run_ok(d.docker().args(["rmi", "--force", &target]));
    let o = run(d.docker().args(["pull", &target]));
    assert_fails_with(
        &o,
        &["unauthorized", "no basic auth credentials", "authentication required"],
        "docker pull after logout",
    );
}

// ---------------------------------------------------------------------------
// 2. skopeo and podman through their cert dirs
// ---------------------------------------------------------------------------

/// skopeo with `--dest-cert-dir/--src-cert-dir` holding the JSON's CA and
/// `--dest-creds/--src-creds` from the JSON. Without the cert dir, without
/// credentials or with a wrong password it fails for the right reason, and the
/// server keeps serving.
#[test]
fn skopeo_copies_through_a_cert_dir_with_creds() {
    let reg = Registry::start_specreg_with(&[]);
    let info = reg.info().clone();
    assert_eq!(info.host, "127.0.0.1", "with --listen 127.0.0.1:0 the info host is that IP");
    assert_eq!(info.registry(), reg.addr());
    let sk = Skopeo::new();
    let work = TempTree::new("skopeo-tls");
    let certs = info.write_cert_dir(&work.join("certs"));
    let src = work.join("src");
    let img = single_arch_layout(&src, "v1", 3 << 20);
    let src_ref = format!("oci:{}:v1", src.display());
    let dst_ref = format!("docker://{}/e2e/tls-skopeo:v1", info.registry());
    let creds = info.creds();

    let o = skopeo_copy(&sk, &["--dest-creds", &creds], &src_ref, &dst_ref);
    assert_fails_with(&o, &["x509", "certificate"], "skopeo without the cert dir");
    assert_still_serving(&reg, "skopeo refused its certificate");

    let o = skopeo_copy(&sk, &["--dest-cert-dir", p(&certs)], &src_ref, &dst_ref);
    assert_fails_with(&o, &["unauthorized", "authentication required"], "skopeo push without credentials");
    let wrong = format!("{}:not-the-password", info.username);
    let o = skopeo_copy(&sk, &["--dest-cert-dir", p(&certs), "--dest-creds", &wrong], &src_ref, &dst_ref);
    assert_fails_with(&o, &["unauthorized", "invalid user name or password"], "skopeo push with a wrong password");
    let r = reg.get("/v2/e2e/tls-skopeo/tags/list", &[]);
    assert_eq!(r.status, 404, "refused pushes created the repository:\n{}", r.describe());

    let pushed = skopeo_copy_digest(&sk, work.path(), &["--dest-cert-dir", p(&certs), "--dest-creds", &creds], &src_ref, &dst_ref);
    assert_eq!(pushed, img.manifest.digest, "skopeo pushed another manifest than the layout's");
    let served = reg.manifest("e2e/tls-skopeo", "v1");
    assert_eq!(served.digest, img.manifest.digest);
    assert_eq!(served.bytes, img.manifest_bytes, "manifest bytes served unchanged");
    reg.assert_complete("e2e/tls-skopeo", &served);

    let raw = run_ok(sk.cmd().args(["inspect", "--raw", "--cert-dir", p(&certs), "--creds", &creds, &dst_ref]));
    assert_eq!(digest_of(raw.as_bytes()), img.manifest.digest, "skopeo inspect --raw digest");
    assert_pulls_back(&sk, &["--src-cert-dir", p(&certs), "--src-creds", &creds], &dst_ref, &work.join("dst"), &img, &src);
}

/// podman: `podman login --cert-dir` with the JSON's credentials, push, pull;
/// after `podman logout` pulls fail, and `--creds` pulls by digest.
#[test]
fn podman_login_push_pull_through_a_cert_dir() {
    let reg = Registry::start_specreg_with(&[]);
    let info = reg.info().clone();
    let pm = Podman::new();
    let work = TempTree::new("podman-tls");
    let certs = info.write_cert_dir(&work.join("certs"));
    let src = work.join("src");
    let img = single_arch_layout(&src, "v1", 1 << 20);
    let policy = pm.policy();
    let policy = p(&policy);
    let registry = info.registry();

    let out = run_ok(pm.cmd().args(["pull", "--signature-policy", policy]).arg(format!("oci:{}:v1", src.display())));
    let local_id = out.lines().last().unwrap_or_default().trim().to_string();
    assert_eq!(format!("sha256:{local_id}"), img.config.digest, "podman's image ID");
    let target = format!("{registry}/e2e/tls-podman:1");
    run_ok(pm.cmd().args(["tag", &local_id, &target]));

    let o = run_input(
        pm.cmd().args(["login", "--cert-dir", p(&certs), "--username", &info.username, "--password-stdin", &registry]),
        info.password.as_bytes(),
    );
    assert!(o.success() && o.stdout.contains("Login Succeeded"), "podman login\n{}", o.describe());

    let digestfile = work.join("push.digest");
    run_ok(
        pm.cmd()
            .args(["push", "--cert-dir", p(&certs), "--signature-policy", policy, "--digestfile", p(&digestfile), &target]),
    );
    let pushed = fs::read_to_string(&digestfile).unwrap().trim().to_string();
    let served = reg.manifest("e2e/tls-podman", "1");
    assert_eq!(served.digest, pushed, "registry's digest for the tag vs podman push's");
    assert_eq!(served.json["config"]["digest"], img.config.digest.as_str());
    reg.assert_complete("e2e/tls-podman", &served);
    assert_eq!(reg.blob("e2e/tls-podman", &img.config.digest), img.config_bytes);

    run_ok(pm.cmd().args(["rmi", "--all", "--force"]));
    run_ok(pm.cmd().args(["pull", "--cert-dir", p(&certs), "--signature-policy", policy, &target]));
    let field = |image: &str, f: &str| run_ok(pm.cmd().args(["image", "inspect", "--format", f, image])).trim().to_string();
    assert_eq!(format!("sha256:{}", field(&target, "{{.Id}}")), img.config.digest, "pulled image ID");
    assert_eq!(field(&target, "{{.Digest}}"), pushed, "pulled image digest");

    run_ok(pm.cmd().args(["logout", &registry]));
    run_ok(pm.cmd().args(["rmi", "--all", "--force"]));
    let o = run(pm.cmd().args(["pull", "--cert-dir", p(&certs), "--signature-policy", policy, &target]));
    assert_fails_with(&o, &["unauthorized", "authentication required"], "podman pull after logout");
    let by_digest = format!("{registry}/e2e/tls-podman@{pushed}");
    run_ok(pm.cmd().args([
        "pull",
        "--cert-dir",
        p(&certs),
        "--creds",
        &info.creds(),
        "--signature-policy",
        policy,
        &by_digest,
    ]));
    assert_eq!(format!("sha256:{}", field(&by_digest, "{{.Id}}")), img.config.digest, "pulled by digest");
}

// ---------------------------------------------------------------------------
// 3. Refusals
// ---------------------------------------------------------------------------

/// Every way in without the right to: no credentials, a wrong password, a read
/// user pushing, tokens for other repositories or actions, forged tokens, a
/// second instance's token, clients that do not trust the CA.
#[test]
fn refusals_have_the_right_status_and_challenge() {
    let work = TempTree::new("auth-neg");
    let writer_pw = format!("writer-{}", unique_marker("pw"));
    let reader_pw = "reader-secret".to_string();
    fs::write(work.join("writer.pw"), format!("{writer_pw}\n")).unwrap();
    fs::write(work.join("reader.pw"), format!("{reader_pw}\n")).unwrap();
    let reg = Registry::start_specreg_with(&[
        "--user",
        &format!("writer:write:file={}", work.join("writer.pw").display()),
        "--user",
        &format!("reader:read:file={}", work.join("reader.pw").display()),
    ]);
    let info = reg.info().clone();
    assert_eq!((info.username.as_str(), info.password.as_str()), ("writer", writer_pw.as_str()), "the first user");
    let realm = format!("https://{}/auth/token", reg.addr());
    let writer = basic_auth("writer", &writer_pw);
    let reader = basic_auth("reader", &reader_pw);

    // Content to pull: pushed by the writer.
    let sk = Skopeo::new();
    let certs = info.write_cert_dir(&work.join("certs"));
    let src = work.join("src");
    let img = single_arch_layout(&src, "v1", 64 << 10);
    let dst_ref = format!("docker://{}/e2e/neg:v1", info.registry());
    let pushed = skopeo_copy_digest(
        &sk,
        work.path(),
        &["--dest-cert-dir", p(&certs), "--dest-creds", &info.creds()],
        &format!("oci:{}:v1", src.display()),
        &dst_ref,
    );
    assert_eq!(pushed, img.manifest.digest);

    // No credentials: 401 with a challenge naming what is needed.
    let r = reg.send_exact("GET", "/v2/", &[], b"");
    assert_challenge(&r, &realm, None, None, "GET /v2/ without credentials");
    let r = get_manifest(&reg, "e2e/neg", "v1", None);
    assert_challenge(&r, &realm, Some("repository:e2e/neg:pull"), None, "GET manifest without credentials");
    let r = reg.send_exact("HEAD", "/v2/e2e/neg/manifests/v1", &[], b"");
    assert_challenge(&r, &realm, Some("repository:e2e/neg:pull"), None, "HEAD manifest without credentials");
    let r = post_upload(&reg, "e2e/neg", None);
    assert_challenge(&r, &realm, Some("repository:e2e/neg:pull,push"), None, "POST upload without credentials");
    let r = reg.send_exact("GET", "/v2/_catalog", &[], b"");
    assert_status(&r, 401, "catalog without credentials");

    // Wrong password, unknown user, the password plus its file's newline: 401.
    for (u, pw) in [
        ("writer", "wrong".to_string()),
        ("writer", format!("{writer_pw}\n")),
        ("nobody", writer_pw.clone()),
        ("reader", writer_pw.clone()),
    ] {
        let a = basic_auth(u, &pw);
        let r = get_manifest(&reg, "e2e/neg", "v1", Some(&a));
        assert_challenge(&r, &realm, Some("repository:e2e/neg:pull"), None, &format!("GET as {u} with {pw:?}"));
        let r = post_upload(&reg, "e2e/neg", Some(&a));
        assert_status(&r, 401, &format!("POST upload as {u} with {pw:?}"));
        let r = token_request(&reg, Some(&a), "repository:e2e/neg:pull");
        assert_eq!(r.status, 401, "token for {u} with {pw:?}:\n{}", r.describe());
    }
    let r = token_request(&reg, None, "repository:e2e/neg:pull");
    assert_eq!(r.status, 401, "token without credentials:\n{}", r.describe());

    let r = get_manifest(&reg, "e2e/neg", "v1", Some(&writer));
    assert_eq!(r.status, 200, "writer pulls with Basic:\n{}", r.describe());

    // The read user pulls, and may not push, tag or delete: 403 DENIED.
    let r = get_manifest(&reg, "e2e/neg", "v1", Some(&reader));
    assert_eq!(r.status, 200, "reader pulls:\n{}", r.describe());
    assert_eq!(digest_of(&r.body), pushed, "reader got the pushed manifest");
    assert_denied(&post_upload(&reg, "e2e/neg", Some(&reader)), "reader starts an upload");
    let r = reg.send_exact(
        "PUT",
        "/v2/e2e/neg/manifests/by-reader",
        &[("Authorization", &reader), ("Content-Type", OCI_MANIFEST)],
        &img.manifest_bytes,
    );
    assert_denied(&r, "reader tags a manifest");
    let r = reg.send_exact("DELETE", &format!("/v2/e2e/neg/manifests/{pushed}"), &[("Authorization", &reader)], b"");
    assert_denied(&r, "reader deletes a manifest");
    assert_eq!(reg.tags("e2e/neg"), vec!["v1".to_string()], "refused requests changed the tags");

    // ... and through a real client the push fails naming the denial.
    let src2 = work.join("src2");
    single_arch_layout(&src2, "v1", 64 << 10);
    let o = skopeo_copy(
        &sk,
        &["--dest-cert-dir", p(&certs), "--dest-creds", &format!("reader:{reader_pw}")],
        &format!("oci:{}:v1", src2.display()),
        &format!("docker://{}/e2e/neg-reader:v1", info.registry()),
    );
    assert_fails_with(&o, &["denied"], "skopeo push as the read user");

    // Tokens: what was asked and allowed, nothing more.
    let t_rw = token(&reg, "writer", &writer_pw, "repository:e2e/neg:pull,push");
    let r = post_upload(&reg, "e2e/neg", Some(&bearer(&t_rw)));
    assert_eq!(r.status, 202, "push token starts an upload:\n{}", r.describe());
    let r = get_manifest(&reg, "e2e/neg", "v1", Some(&bearer(&t_rw)));
    assert_eq!(r.status, 200, "push token pulls:\n{}", r.describe());
    assert_denied(&get_manifest(&reg, "e2e/other", "v1", Some(&bearer(&t_rw))), "e2e/neg token pulls e2e/other");
    assert_denied(&post_upload(&reg, "e2e/other", Some(&bearer(&t_rw))), "e2e/neg token pushes to e2e/other");

    let t_pull = token(&reg, "writer", &writer_pw, "repository:e2e/neg:pull");
    assert_eq!(get_manifest(&reg, "e2e/neg", "v1", Some(&bearer(&t_pull))).status, 200, "pull token pulls");
    assert_denied(&post_upload(&reg, "e2e/neg", Some(&bearer(&t_pull))), "pull token pushes");

    let t_reader = token(&reg, "reader", &reader_pw, "repository:e2e/neg:pull,push");
    assert_eq!(get_manifest(&reg, "e2e/neg", "v1", Some(&bearer(&t_reader))).status, 200, "reader token pulls");
    assert_denied(&post_upload(&reg, "e2e/neg", Some(&bearer(&t_reader))), "reader's token pushes");

    // The OAuth2 password form (containerd's first try).
    let form = format!(
        "grant_type=password&service=specreg&client_id=e2e&username=writer&password={}&scope={}",
        enc(&writer_pw),
        enc("repository:e2e/neg:pull,push")
    );
    let ct = ("Content-Type", "application/x-www-form-urlencoded");
    let r = reg.send_exact("POST", "/auth/token", &[ct], form.as_bytes());
    assert_eq!(r.status, 200, "OAuth2 password grant:\n{}", r.describe());
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    let t_form = v["access_token"].as_str().expect("access_token").to_string();
    assert_eq!(post_upload(&reg, "e2e/neg", Some(&bearer(&t_form))).status, 202, "OAuth2 token pushes");
    let bad_form = form.replace(&enc(&writer_pw), "wrong");
    let r = reg.send_exact("POST", "/auth/token", &[ct], bad_form.as_bytes());
    assert_eq!(r.status, 401, "OAuth2 grant with a wrong password:\n{}", r.describe());

    // Forged tokens: 401 with error="invalid_token".
    let parts: Vec<&str> = t_pull.split('.').collect();
    let mut claims: Value = serde_json::from_slice(&b64_decode(parts[1]).expect("JWT payload")).expect("claims JSON");
    assert_eq!(claims["access"][0]["name"], "e2e/neg", "claims: {claims:#}");
    claims["access"] = json!([{"type": "repository", "name": "e2e/neg", "actions": ["pull", "push"]}]);
    let forged = format!("{}.{}.{}", parts[0], b64url(&serde_json::to_vec(&claims).unwrap()), parts[2]);
    let r = post_upload(&reg, "e2e/neg", Some(&bearer(&forged)));
    assert_challenge(&r, &realm, Some("repository:e2e/neg:pull,push"), Some("invalid_token"), "altered payload, push");
    let r = get_manifest(&reg, "e2e/neg", "v1", Some(&bearer(&forged)));
    assert_challenge(&r, &realm, Some("repository:e2e/neg:pull"), Some("invalid_token"), "altered payload, pull");
    let r = get_manifest(&reg, "e2e/neg", "v1", Some("Bearer not.a.token"));
    assert_challenge(&r, &realm, Some("repository:e2e/neg:pull"), Some("invalid_token"), "garbage token");

    // A token another specreg instance issued (same service name, other key).
    let other = Registry::start_specreg_with(&[]);
    let oi = other.info().clone();
    let t_other = token(&other, &oi.username, &oi.password, "repository:e2e/neg:pull,push");
    assert_eq!(post_upload(&other, "e2e/neg", Some(&bearer(&t_other))).status, 202, "valid where issued");
    let r = post_upload(&reg, "e2e/neg", Some(&bearer(&t_other)));
    assert_challenge(&r, &realm, Some("repository:e2e/neg:pull,push"), Some("invalid_token"), "other instance's token");
    let r = get_manifest(&reg, "e2e/neg", "v1", Some(&bearer(&t_other)));
    assert_challenge(&r, &realm, Some("repository:e2e/neg:pull"), Some("invalid_token"), "other instance's token, pull");

    // Clients that do not trust the CA fail on the certificate; the server goes on.
    let url = format!("https://{}/v2/", reg.addr());
    let o = curl(&["-o", "/dev/null", &url]);
    assert_eq!(o.status.code(), Some(60), "curl without --cacert: exit 60 (certificate)\n{}", o.describe());
    assert_fails_with(&o, &["certificate"], "curl without --cacert");
    let e = https(reg.addr(), "127.0.0.1", &oi.cert, "GET", "/v2/", &[], b"")
        .expect_err("a client trusting another instance's CA must refuse this certificate");
    assert!(e.contains("UnknownIssuer") || e.contains("certificate"), "rustls error: {e}");
    let ca_file = work.join("ca.pem");
    fs::write(&ca_file, &info.cert).unwrap();
    let o = curl(&["--cacert", p(&ca_file), "-o", "/dev/null", "-w", "%{http_code}", &url]);
    assert!(o.success() && o.stdout == "401", "curl with --cacert and no credentials\n{}", o.describe());
    let o = curl(&["--cacert", p(&ca_file), "-u", &info.creds(), "-o", "/dev/null", "-w", "%{http_code}", &url]);
    assert!(o.success() && o.stdout == "200", "curl with --cacert and the credentials\n{}", o.describe());
    assert_still_serving(&reg, "clients refused its certificate");
    assert_eq!(reg.manifest("e2e/neg", "v1").digest, pushed);
}

/// A token past its lifetime (`token_lifetime_secs = 1` from a config file) is
/// refused with 401 error="invalid_token".
#[test]
fn expired_tokens_are_refused() {
    let work = TempTree::new("expiry");
    let cfg = work.join("specreg.toml");
    fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:0\"\ndata = \"{}\"\nfsync = false\ntoken_lifetime_secs = 1\n\
             [[users]]\nname = \"ci\"\naccess = \"write\"\n",
            work.join("data").display()
        ),
    )
    .unwrap();
    let reg = Registry::start_specreg_with(&["--config", p(&cfg)]);
    let info = reg.info().clone();
    assert_eq!(info.username, "ci");
    assert_eq!(
        fs::read_to_string(work.join("data/auth/ci.password")).unwrap().trim_end(),
        info.password,
        "generated password kept in <data>/auth/ci.password"
    );
    let realm = format!("https://{}/auth/token", reg.addr());

    // Fresh, it works (retry once: a token issued at the end of a second may
    // already be stale at the start of the next).
    let mut t = String::new();
    let mut fresh_ok = false;
    for _ in 0..3 {
        t = token(&reg, "ci", &info.password, "repository:e2e/exp:pull,push");
        let r = token_request(&reg, Some(&basic_auth("ci", &info.password)), "repository:e2e/exp:pull");
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["expires_in"], 1, "expires_in follows token_lifetime_secs:\n{v:#}");
        if post_upload(&reg, "e2e/exp", Some(&bearer(&t))).status == 202 {
            fresh_ok = true;
            break;
        }
    }
    assert!(fresh_ok, "a fresh token was never accepted");
    std::thread::sleep(Duration::from_millis(2500));
    let r = post_upload(&reg, "e2e/exp", Some(&bearer(&t)));
    assert_challenge(&r, &realm, Some("repository:e2e/exp:pull,push"), Some("invalid_token"), "expired token, push");
    let r = reg.send_exact("GET", "/v2/", &[("Authorization", &bearer(&t))], b"");
    assert_challenge(&r, &realm, None, Some("invalid_token"), "expired token, GET /v2/");
    // Basic still works, and a new token too.
    assert_still_serving(&reg, "expired tokens");
    let t2 = token(&reg, "ci", &info.password, "repository:e2e/exp:pull,push");
    assert_eq!(post_upload(&reg, "e2e/exp", Some(&bearer(&t2))).status, 202, "a new token");
}

// ---------------------------------------------------------------------------
// 4. Certificates and secrets across a restart
// ---------------------------------------------------------------------------

/// Restarted on the same data directory the server keeps its CA, leaf and
/// generated password (clients holding the first JSON keep working); `--san`
/// lands in the served leaf; keys, the password file and the info file are 0600;
/// neither stdout nor the (debug) log ever shows the password.
#[test]
fn certs_and_password_survive_a_restart_and_never_leak() {
    let reg = Registry::start_specreg_env(&["--san", "buildset-registry"], &[("SPECREG_LOG", "debug")]);
    let info = reg.info().clone();
    let ca_der = pem_certs_der(&info.cert);
    assert_eq!(ca_der.len(), 1, "the info file's cert is one CA certificate");
    let ca_fp = sha256_fingerprint(&ca_der[0]);
    let announce = reg.announce().to_string();
    assert_eq!(
        announce,
        format!(
            "specreg serve: listening on https://{} as {}; user zuul; connection info in {}; CA {ca_fp}",
            reg.addr(),
            info.registry(),
            info.path.display()
        ),
        "the stdout line"
    );
    assert!(!announce.contains(&info.password), "stdout line shows the password");

    // openssl agrees on the fingerprint, and the CA is a CA.
    let work = TempTree::new("restart");
    let ca_file = work.join("ca.pem");
    fs::write(&ca_file, &info.cert).unwrap();
    let out = openssl(&["x509", "-in", p(&ca_file), "-noout", "-fingerprint", "-sha256"]);
    let ossl_fp = out.trim().split_once('=').map(|(_, f)| f.to_string()).unwrap_or_default();
    assert!(ossl_fp.eq_ignore_ascii_case(&ca_fp), "openssl fingerprint {out:?} vs {ca_fp}");
    let out = openssl(&["x509", "-in", p(&ca_file), "-noout", "-ext", "basicConstraints"]);
    assert!(out.contains("CA:TRUE"), "CA basicConstraints: {out}");

    // The served chain verifies against the JSON's CA, for the address and the --san.
    let served = tls_peer_certs(reg.addr(), "127.0.0.1", &info.cert).expect("TLS with the JSON's CA");
    let leaf_fp = sha256_fingerprint(&served[0]);
    assert_ne!(leaf_fp, ca_fp, "the server presents a leaf, not the CA");
    tls_peer_certs(reg.addr(), "buildset-registry", &info.cert).expect("the leaf is valid for --san buildset-registry");
    tls_peer_certs(reg.addr(), "localhost", &info.cert).expect("the leaf is valid for localhost");
    let e = tls_peer_certs(reg.addr(), "not-buildset-registry.example", &info.cert)
        .expect_err("the leaf must not be valid for names it does not list");
    assert!(e.contains("NotValidForName") || e.contains("certificate"), "{e}");
    let leaf_file = work.join("leaf.der");
    fs::write(&leaf_file, &served[0]).unwrap();
    let sans = openssl(&["x509", "-inform", "DER", "-in", p(&leaf_file), "-noout", "-ext", "subjectAltName"]);
    for want in ["DNS:buildset-registry", "DNS:localhost", "IP Address:127.0.0.1"] {
        assert!(sans.contains(want), "served leaf lacks {want}: {sans}");
    }
    let leaf_pem = work.join("leaf.pem");
    openssl(&["x509", "-inform", "DER", "-in", p(&leaf_file), "-out", p(&leaf_pem)]);
    let out = openssl(&["verify", "-CAfile", p(&ca_file), p(&leaf_pem)]);
    assert!(out.contains(": OK"), "openssl verify of the served leaf against the JSON's CA: {out}");

    // Secrets on disk: 0600.
    let tls_dir = reg.data.join("tls");
    let keys: Vec<_> = fs::read_dir(&tls_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "key"))
        .collect();
    assert!(keys.len() >= 2, "CA and leaf keys in {}: {keys:?}", tls_dir.display());
    for k in keys.iter().chain([&reg.data.join("auth/zuul.password"), &info.path]) {
        assert_eq!(mode_of(k), 0o600, "mode of {}", k.display());
    }
    assert_eq!(fs::read_to_string(reg.data.join("auth/zuul.password")).unwrap().trim_end(), info.password);

    // Use the credentials every way a client does, then look for them in the output.
    let sk = Skopeo::new();
    let certs = info.write_cert_dir(&work.join("certs"));
    let src = work.join("src");
    let img = single_arch_layout(&src, "v1", 256 << 10);
    let dst_ref = format!("docker://{}/e2e/restart:v1", info.registry());
    let creds = info.creds();
    let pushed = skopeo_copy_digest(
        &sk,
        work.path(),
        &["--dest-cert-dir", p(&certs), "--dest-creds", &creds],
        &format!("oci:{}:v1", src.display()),
        &dst_ref,
    );
    assert_eq!(pushed, img.manifest.digest);
    let form = format!(
        "grant_type=password&service=specreg&username=zuul&password={}&scope={}",
        enc(&info.password),
        enc("repository:e2e/restart:pull")
    );
    let r = reg.send_exact("POST", "/auth/token", &[("Content-Type", "application/x-www-form-urlencoded")], form.as_bytes());
    assert_eq!(r.status, 200, "OAuth2 grant:\n{}", r.describe());
    let wrong = format!("{}x", info.password);
    assert_eq!(get_manifest(&reg, "e2e/restart", "v1", Some(&basic_auth("zuul", &wrong))).status, 401);
    assert_eq!(get_manifest(&reg, "e2e/restart", "v1", Some(&basic_auth(&info.password, "x"))).status, 401);

    let check_no_leak = |reg: &Registry, when: &str| {
        let log = reg.log_text();
        assert!(log.contains("registry ready"), "{when}: not the server's log?\n{log}");
        assert!(log.contains("DEBUG"), "{when}: the log should be at debug level for this check");
        for (i, line) in log.lines().enumerate() {
            assert!(!line.contains(&info.password), "{when}: log line {} shows the password: {line}", i + 1);
        }
        let stdout = reg.stdout_text();
        assert!(!stdout.contains(&info.password), "{when}: stdout shows the password:\n{stdout}");
    };
    check_no_leak(&reg, "first run");

    // Restart on the same data directory.
    let (status, reg) = reg.restart();
    assert!(status.success(), "SIGTERM must end the server cleanly: {status}");
    let info2 = reg.info().clone();
    assert_eq!(info2.path, info.path);
    assert_eq!(info2.cert, info.cert, "the CA changed across the restart");
    assert_eq!(info2.username, info.username);
    assert_eq!(info2.password, info.password, "the generated password changed across the restart");
    assert!(reg.announce().ends_with(&format!("; CA {ca_fp}")), "stdout line after restart: {}", reg.announce());
    let served2 = tls_peer_certs(reg.addr(), "buildset-registry", &info.cert).expect("TLS after restart with the old CA");
    assert_eq!(sha256_fingerprint(&served2[0]), leaf_fp, "the served leaf changed across the restart");
    if served.len() > 1 {
        assert_eq!(served2.get(1), served.get(1), "the served chain's CA changed");
    }
    assert_eq!(mode_of(&info2.path), 0o600);

    // A client holding the first JSON (old cert dir, old password) still pulls.
    let dst_ref2 = format!("docker://{}/e2e/restart:v1", info2.registry());
    assert_pulls_back(&sk, &["--src-cert-dir", p(&certs), "--src-creds", &creds], &dst_ref2, &work.join("dst"), &img, &src);
    check_no_leak(&reg, "after the restart");
}

// ---------------------------------------------------------------------------
// 5. Given certificate and key
// ---------------------------------------------------------------------------

/// A CA and a leaf made with openssl; `--tls-cert` (leaf + CA) and `--tls-key`.
/// The server presents exactly that leaf and generates no CA; skopeo copies
/// through a cert dir holding the openssl CA.
#[test]
fn given_tls_cert_and_key_are_served() {
    let work = TempTree::new("given-cert");
    let w = |name: &str, text: &str| {
        let path = work.join(name);
        fs::write(&path, text).unwrap();
        path
    };
    let ca_cnf = w(
        "ca.cnf",
        "[req]\ndistinguished_name = dn\nprompt = no\nx509_extensions = v3_ca\n[dn]\nCN = specreg e2e given CA\n\
         [v3_ca]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\nsubjectKeyIdentifier = hash\n",
    );
    let leaf_cnf = w("leaf.cnf", "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = specreg e2e given leaf\n");
    let ext = w(
        "ext.cnf",
        "basicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\nextendedKeyUsage = serverAuth\n\
         subjectAltName = IP:127.0.0.1,DNS:localhost\nauthorityKeyIdentifier = keyid\n",
    );
    let (ca_crt, ca_key) = (work.join("ca.crt"), work.join("ca.key"));
    let (leaf_crt, leaf_key, csr) = (work.join("leaf.crt"), work.join("leaf.key"), work.join("leaf.csr"));
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    run_ok(Command::new(tool("openssl"))
        .args(["req", "-x509", "-new", "-config", p(&ca_cnf), "-days", "7", "-keyout", p(&ca_key), "-out", p(&ca_crt)])
        .args(ec));
    run_ok(Command::new(tool("openssl"))
        .args(["req", "-new", "-config", p(&leaf_cnf), "-keyout", p(&leaf_key), "-out", p(&csr)])
        .args(ec));
    run_ok(Command::new(tool("openssl")).args([
        "x509", "-req", "-in", p(&csr), "-CA", p(&ca_crt), "-CAkey", p(&ca_key), "-set_serial", "0x5eec4e90",
        "-days", "7", "-extfile", p(&ext), "-out", p(&leaf_crt),
    ]));
    let ca_pem = fs::read_to_string(&ca_crt).unwrap();
    let leaf_pem = fs::read_to_string(&leaf_crt).unwrap();
    let chain = w("fullchain.pem", &format!("{leaf_pem}{ca_pem}"));

    let mut reg = Registry::start_specreg_with(&["--tls-cert", p(&chain), "--tls-key", p(&leaf_key)]);
    let info = reg.info().clone();
    reg.set_ca_pem(Some(ca_pem.clone()));
    let served = tls_peer_certs(reg.addr(), "127.0.0.1", &ca_pem).expect("TLS trusting the openssl CA");
    assert_eq!(served[0], pem_certs_der(&leaf_pem)[0], "the server must present the given leaf");
    assert!(!reg.data.join("tls/ca.key").exists(), "with a given certificate no CA is generated");
    assert!(
        pem_certs_der(&info.cert).contains(&pem_certs_der(&ca_pem)[0]),
        "the info file's cert should hold the CA of the given chain:\n{}",
        info.cert
    );
    let e = tls_peer_certs(reg.addr(), "localhost.example", &ca_pem).expect_err("a name the leaf lacks");
    assert!(e.contains("NotValidForName") || e.contains("certificate"), "{e}");

    let sk = Skopeo::new();
    let certs = write_ca_dir(&work.join("certs"), &ca_pem);
    let src = work.join("src");
    let img = single_arch_layout(&src, "v1", 512 << 10);
    let dst_ref = format!("docker://{}/e2e/given:v1", info.registry());
    let o = skopeo_copy(&sk, &["--dest-creds", &info.creds()], &format!("oci:{}:v1", src.display()), &dst_ref);
    assert_fails_with(&o, &["x509", "certificate"], "skopeo without the given CA");
    let pushed = skopeo_copy_digest(
        &sk,
        work.path(),
        &["--dest-cert-dir", p(&certs), "--dest-creds", &info.creds()],
        &format!("oci:{}:v1", src.display()),
        &dst_ref,
    );
    assert_eq!(pushed, img.manifest.digest);
    let m = reg.manifest("e2e/given", "v1");
    assert_eq!(m.bytes, img.manifest_bytes);
    reg.assert_complete("e2e/given", &m);
    assert_pulls_back(&sk, &["--src-cert-dir", p(&certs), "--src-creds", &info.creds()], &dst_ref, &work.join("dst"), &img, &src);
}

// ---------------------------------------------------------------------------
// 6. Anonymous reads
// ---------------------------------------------------------------------------

/// Push `img` (from layout `src`) as `repo:tag` over plain registry requests with
/// the registry's own credentials (monolithic blob uploads, then the manifest).
fn http_push(reg: &Registry, repo: &str, tag: &str, img: &BuiltImage, src: &Path) {
    let layout = OciLayout::open(src);
    for d in img.blob_digests() {
        let r = reg.send("POST", &format!("/v2/{repo}/blobs/uploads/"), &[], b"");
        assert_eq!(r.status, 202, "start upload:\n{}", r.describe());
        let loc = r.header("location").expect("upload Location").to_string();
        let sep = if loc.contains('?') { '&' } else { '?' };
        let r = reg.send("PUT", &format!("{loc}{sep}digest={d}"), &[("Content-Type", "application/octet-stream")], &layout.blob(&d));
        assert_eq!(r.status, 201, "finish upload of {d}:\n{}", r.describe());
    }
    let r = reg.send(
        "PUT",
        &format!("/v2/{repo}/manifests/{tag}"),
        &[("Content-Type", OCI_MANIFEST)],
        &img.manifest_bytes,
    );
    assert_eq!(r.status, 201, "put manifest:\n{}", r.describe());
}

/// `--anonymous-read`: anyone pulls (also with wrong credentials, as docker sends
/// its Docker Hub login to mirrors); pushing needs the write user, and the write
/// user can still push with a real client.
#[test]
fn anonymous_read_pulls_without_credentials_but_never_pushes() {
    let mut reg = Registry::start_specreg_with(&["--anonymous-read"]);
    let info = reg.info().clone();
    let realm = format!("https://{}/auth/token", reg.addr());
    let sk = Skopeo::new();
    let work = TempTree::new("anon");
    let certs = info.write_cert_dir(&work.join("certs"));
    let src = work.join("src");
    let img = single_arch_layout(&src, "v1", 256 << 10);
    let src_ref = format!("oci:{}:v1", src.display());
    let dst_ref = format!("docker://{}/e2e/anon:v1", info.registry());
    http_push(&reg, "e2e/anon", "v1", &img, &src);
    let pushed = img.manifest.digest.clone();

    // Anonymous HTTP: reads yes, writes 401 with the push challenge.
    reg.set_credentials(None);
    let m = reg.manifest("e2e/anon", "v1");
    assert_eq!(m.digest, pushed, "anonymous manifest pull");
    reg.assert_complete("e2e/anon", &m);
    let r = post_upload(&reg, "e2e/anon", None);
    assert_challenge(&r, &realm, Some("repository:e2e/anon:pull,push"), None, "anonymous push");
    let r = reg.send_exact("DELETE", &format!("/v2/e2e/anon/manifests/{pushed}"), &[], b"");
    assert_status(&r, 401, "anonymous delete");

    // Wrong credentials (a Docker Hub login) still pull, but do not push.
    reg.set_credentials(Some(("dockerhub-user", "dockerhub-password")));
    let m = reg.manifest("e2e/anon", "v1");
    assert_eq!(m.digest, pushed, "pull with unknown Basic credentials");
    assert_eq!(reg.blob("e2e/anon", &img.config.digest), img.config_bytes);
    let hub = basic_auth("dockerhub-user", "dockerhub-password");
    assert_status(&post_upload(&reg, "e2e/anon", Some(&hub)), 401, "push with unknown Basic credentials");

    // An anonymous token grants pull only.
    let r = token_request(&reg, None, "repository:e2e/anon:pull,push");
    assert_eq!(r.status, 200, "anonymous token:\n{}", r.describe());
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    let t = v["token"].as_str().unwrap().to_string();
    assert_eq!(get_manifest(&reg, "e2e/anon", "v1", Some(&bearer(&t))).status, 200, "anonymous token pulls");
    // An anonymous token lacking push is told to authenticate (401 + challenge), not 403.
    assert_challenge(
        &post_upload(&reg, "e2e/anon", Some(&bearer(&t))),
        &realm,
        Some("repository:e2e/anon:pull,push"),
        Some("insufficient_scope"),
        "anonymous token pushes",
    );

    // skopeo: anonymous pull, a pull with bogus credentials, no anonymous push.
    assert_pulls_back(&sk, &["--src-cert-dir", p(&certs)], &dst_ref, &work.join("dst"), &img, &src);
    assert_pulls_back(
        &sk,
        &["--src-cert-dir", p(&certs), "--src-creds", "dockerhub-user:dockerhub-password"],
        &dst_ref,
        &work.join("dst2"),
        &img,
        &src,
    );
    let other_ref = format!("docker://{}/e2e/anon-push:v1", info.registry());
    let o = skopeo_copy(&sk, &["--dest-cert-dir", p(&certs)], &src_ref, &other_ref);
    assert_fails_with(&o, &["unauthorized", "authentication required"], "anonymous skopeo push");

    // The write user still pushes with a real client. Clients learn how to
    // authenticate from the challenge on `GET /v2/`: without one they send no
    // credentials at all.
    let digestfile = work.join("write-user.digest");
    let o = skopeo_copy(
        &sk,
        &["--dest-cert-dir", p(&certs), "--dest-creds", &info.creds(), "--digestfile", p(&digestfile)],
        &src_ref,
        &other_ref,
    );
    let ping = reg.send_exact("GET", "/v2/", &[], b"");
    assert!(
        o.success(),
        "with --anonymous-read the write user's skopeo push (valid --dest-creds) failed.\n\
         Anonymous GET /v2/ answered {} with WWW-Authenticate {:?}: docker and containers/image \
         take the auth scheme from that ping and, without a challenge there, never send \
         credentials, so the upload is refused.\n{}",
        ping.status,
        ping.header("www-authenticate"),
        o.describe()
    );
    let pushed2 = fs::read_to_string(&digestfile).unwrap().trim().to_string();
    assert_eq!(pushed2, img.manifest.digest);
    reg.set_credentials(Some((&info.username, &info.password)));
    assert_eq!(reg.manifest("e2e/anon-push", "v1").digest, pushed2);
}

/// `--anonymous-read` with docker (CA trusted through certs.d, non-loopback
/// address as in the first test): anonymous pull; a pull while docker holds wrong
/// credentials for the registry (as it sends Docker Hub's to mirrors); and the
/// write user's `docker login` + `docker push`.
#[test]
fn docker_with_anonymous_read() {
    let listen_ip = host_ipv4().map(|ip| ip.to_string()).unwrap_or_else(|| "127.0.0.1".into());
    let reg = Registry::start_specreg_with(&["--listen", &format!("{listen_ip}:0"), "--anonymous-read"]);
    let info = reg.info().clone();
    let host = info.registry();
    let certs_d = TempTree::new("certsd-anon");
    write_ca_dir(&certs_d.join(&host), &info.cert);
    let d = Dockerd::start_with_certs_d(&[], certs_d.path());
    let work = TempTree::new("docker-anon");
    let src = work.join("src");
    let img = single_arch_layout(&src, "v1", 128 << 10);
    http_push(&reg, "e2e/anon-docker", "v1", &img, &src);
    let pushed = img.manifest.digest.clone();
    let target = format!("{host}/e2e/anon-docker:v1");

    // No credentials at all.
    let out = run_ok(d.docker().args(["pull", &target]));
    assert!(out.contains(&format!("Digest: {pushed}")), "anonymous docker pull:\n{out}");
    assert_eq!(docker_inspect(&d, &target, "{{.Id}}"), img.config.digest, "anonymous pull: image ID");
    run_ok(d.docker().args(["rmi", "--force", &target]));

    // Wrong credentials stored for this registry are sent, and must not stop pulls.
    let client_config = d.dir().join("client/config.json");
    let wrong = json!({"auths": {host.clone(): {"auth": b64(b"dockerhub-user:dockerhub-password")}}});
    fs::write(&client_config, serde_json::to_vec(&wrong).unwrap()).unwrap();
    let out = run_ok(d.docker().args(["pull", &target]));
    assert!(out.contains(&format!("Digest: {pushed}")), "docker pull with wrong stored credentials:\n{out}");
    run_ok(d.docker().args(["rmi", "--force", &target]));
    fs::write(&client_config, "{}").unwrap();

    // The write user logs in and pushes.
    let o = run_input(
        d.docker().args(["login", "--username", &info.username, "--password-stdin", &host]),
        info.password.as_bytes(),
    );
    assert!(o.success(), "docker login\n{}", o.describe());
    let sk = Skopeo::new();
    load_into_docker(&d, &sk, &src, "v1", "e2e-local/anon:v1");
    let push_target = format!("{host}/e2e/anon-docker:pushed");
    run_ok(d.docker().args(["tag", "e2e-local/anon:v1", &push_target]));
    let o = run(d.docker().args(["push", &push_target]));
    let ping = reg.send_exact("GET", "/v2/", &[], b"");
    assert!(
        o.success(),
        "with --anonymous-read the write user's docker push (after a successful docker login) failed.\n\
         Anonymous GET /v2/ answered {} with WWW-Authenticate {:?}: docker takes the auth scheme \
         from that ping and, without a challenge there, never sends credentials.\n{}",
        ping.status,
        ping.header("www-authenticate"),
        o.describe()
    );
    let digest = pushed_digest(&o.stdout, "pushed");
    let mut reg = reg;
    reg.set_credentials(Some((&info.username, &info.password)));
    assert_eq!(reg.manifest("e2e/anon-docker", "pushed").digest, digest);
}

// ---------------------------------------------------------------------------
// 7. The config file
// ---------------------------------------------------------------------------

/// Users from a TOML `--config` file: a `password_file` with a trailing newline
/// (trimmed) and a `:` in the password, a `password_env` read user; `listen`,
/// `data` and `san` from the file; `--info-file` overrides the file's
/// `info_file`.
#[test]
fn config_file_users_and_flag_overrides() {
    let work = TempTree::new("config");
    let ci_pw = format!("pa:ss:{}", unique_marker("word"));
    let ro_pw = "ro:password-from-env";
    fs::write(work.join("ci.pw"), format!("{ci_pw}\n")).unwrap();
    let data = work.join("data");
    let (from_file, from_flag) = (work.join("from-file.json"), work.join("from-flag.json"));
    let cfg = work.join("specreg.toml");
    fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:0\"\ndata = \"{}\"\nfsync = false\ninfo_file = \"{}\"\nsan = [\"cfg-alias.example\"]\n\n\
             [[users]]\nname = \"ci\"\naccess = \"write\"\npassword_file = \"{}\"\n\n\
             [[users]]\nname = \"ro\"\naccess = \"read\"\npassword_env = \"E2E_RO_PASSWORD\"\n",
            data.display(),
            from_file.display(),
            work.join("ci.pw").display()
        ),
    )
    .unwrap();
    let mut reg = Registry::start_specreg_env(
        &["--config", p(&cfg), "--info-file", p(&from_flag)],
        &[("E2E_RO_PASSWORD", ro_pw)],
    );
    let info = reg.info().clone();
    assert_eq!(info.path, from_flag, "--info-file overrides info_file");
    assert!(!from_file.exists(), "the file's info_file was written although --info-file overrides it");
    assert_eq!(mode_of(&from_flag), 0o600);
    assert_eq!(info.username, "ci", "the first user of the file");
    assert_eq!(info.password, ci_pw, "password_file with its newline trimmed");
    assert_eq!(info.host, "127.0.0.1");
    assert!(data.join("tls/ca.crt").is_file(), "data directory from the file");
    tls_peer_certs(reg.addr(), "cfg-alias.example", &info.cert).expect("san from the config file");

    let ok = |u: &str, pw: &str| reg.send_exact("GET", "/v2/", &[("Authorization", &basic_auth(u, pw))], b"").status;
    assert_eq!(ok("ci", &ci_pw), 200, "password with ':' over Basic");
    assert_eq!(ok("ci", &format!("{ci_pw}\n")), 401, "the newline is not part of the password");
    assert_eq!(ok("ci", "pa"), 401, "a prefix of the password (up to its first ':')");
    assert_eq!(ok("ro", ro_pw), 200, "password_env");

    // skopeo splits --creds on the first ':' only: the password keeps its colons.
    let sk = Skopeo::new();
    let certs = info.write_cert_dir(&work.join("certs"));
    let src = work.join("src");
    let img = single_arch_layout(&src, "v1", 128 << 10);
    let dst_ref = format!("docker://{}/e2e/config:v1", info.registry());
    let pushed = skopeo_copy_digest(
        &sk,
        work.path(),
        &["--dest-cert-dir", p(&certs), "--dest-creds", &info.creds()],
        &format!("oci:{}:v1", src.display()),
        &dst_ref,
    );
    assert_eq!(pushed, img.manifest.digest);
    reg.set_credentials(Some(("ro", ro_pw)));
    let m = reg.manifest("e2e/config", "v1");
    assert_eq!(m.digest, pushed, "the read user pulls");
    assert_denied(&post_upload(&reg, "e2e/config", Some(&basic_auth("ro", ro_pw))), "the read user pushes");
    let ro_creds = format!("ro:{ro_pw}");
    assert_pulls_back(&sk, &["--src-cert-dir", p(&certs), "--src-creds", &ro_creds], &dst_ref, &work.join("dst"), &img, &src);
    let o = skopeo_copy(
        &sk,
        &["--dest-cert-dir", p(&certs), "--dest-creds", &ro_creds],
        &format!("oci:{}:v1", src.display()),
        &format!("docker://{}/e2e/config-ro:v1", info.registry()),
    );
    assert_fails_with(&o, &["denied"], "skopeo push as the read user");
    assert!(!reg.log_text().contains(&ci_pw) && !reg.log_text().contains(ro_pw), "a password in the log");
}
