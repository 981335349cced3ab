//! `specreg copy`, `pull-ahead` and `push-intermediate` against real registries:
//! specreg (TLS + users, as operators run it) and distribution (Debian's
//! docker-registry), with skopeo as the outside check of what landed. Every check
//! compares digests or bytes.

mod support;

use std::process::Command;

use serde_json::{json, Value};
use support::*;

fn specreg() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_specreg"));
    c.env("SPECREG_LOG", "info").env("NO_COLOR", "1").env("DOCKER_CONFIG", "/nonexistent-specreg-e2e");
    c
}

/// `specreg copy --json ARGS...`; returns the report.
fn copy_json(args: &[&str]) -> Value {
    let out = run_ok(specreg().arg("copy").arg("--json").args(args));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("copy --json printed no JSON report ({e}):\n{out}"))
}

fn info_path(reg: &Registry) -> String {
    reg.info().path.display().to_string()
}

/// `skopeo inspect --raw` of an image on a TLS specreg with its credentials.
fn skopeo_raw_auth(sk: &Skopeo, reg: &Registry, image: &str) -> Vec<u8> {
    let o = run(sk.cmd().args(["inspect", "--raw", "--tls-verify=false", "--creds", &reg.info().creds(), image]));
    assert!(o.success(), "skopeo inspect failed\n{}", o.describe());
    o.stdout_bytes
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// OCI layout -> specreg -> distribution -> OCI layout, a single image; then the same
/// copy again moves no blob bytes.
#[test]
fn copy_between_specreg_distribution_and_layouts() {
    let sr = Registry::start_specreg_with(&["--no-fsync"]);
    let dist = Registry::start_distribution();
    let sk = Skopeo::new();
    let work = TempTree::new("copy-single");
    let src = work.join("src");
    let img = single_arch_layout(&src, "v1", 3 << 20);
    let info = info_path(&sr);

    // Layout into the TLS + auth specreg, with the connection info for trust and credentials.
    let r = copy_json(&[&format!("oci:{}:v1", src.display()), &format!("docker://{}/e2e/app:v1", sr.addr()), "--dst-info", &info]);
    assert_eq!(r["digest"], img.manifest.digest.as_str());
    assert_eq!(u(&r["blobs_copied"]), 3, "config and two layers: {r:#}");
    let served = sr.manifest("e2e/app", "v1");
    assert_eq!(served.bytes, img.manifest_bytes, "manifest bytes must be unchanged");
    sr.assert_complete("e2e/app", &served);

    // specreg -> distribution, checked by skopeo.
    let dst_ref = format!("docker://{}/e2e/app:copied", dist.addr());
    let r = copy_json(&[&format!("docker://{}/e2e/app:v1", sr.addr()), &dst_ref, "--src-info", &info, "--dst-insecure"]);
    assert_eq!(r["digest"], img.manifest.digest.as_str());
    assert_eq!(u(&r["bytes_moved"]), img.layers.iter().map(|l| l.size).sum::<u64>() + img.config.size);
    assert_eq!(digest_of(&sk.inspect_raw(&dst_ref)), img.manifest.digest, "skopeo sees the same digest on distribution");
    let on_dist = dist.manifest("e2e/app", "copied");
    dist.assert_complete("e2e/app", &on_dist);

    // distribution -> specreg (another repository), checked by skopeo with credentials.
    let back = format!("docker://{}/e2e/back:v1", sr.addr());
    let r = copy_json(&[&dst_ref, &back, "--src-insecure", "--dst-info", &info]);
    assert_eq!(r["digest"], img.manifest.digest.as_str());
    assert_eq!(digest_of(&skopeo_raw_auth(&sk, &sr, &back)), img.manifest.digest);

    // Again: nothing to move, and the report says so.
    let r = copy_json(&[&dst_ref, &back, "--src-insecure", "--dst-info", &info]);
    assert_eq!(u(&r["bytes_moved"]), 0, "{r:#}");
    assert_eq!(u(&r["blobs_copied"]), 0);
    assert_eq!(u(&r["blobs_skipped"]), 3);
    assert_eq!(r["manifests"][0]["copied"], false);

    // Within one registry, a new repository gets its blobs by mount, not by upload.
    let r = copy_json(&[&format!("docker://{}/e2e/app:v1", sr.addr()), &format!("docker://{}/e2e/mounted:v1", sr.addr()), "--src-info", &info, "--dst-info", &info]);
    assert_eq!(u(&r["blobs_mounted"]), 3, "{r:#}");
    assert_eq!(u(&r["bytes_moved"]), 0);
    sr.assert_complete("e2e/mounted", &sr.manifest("e2e/mounted", "v1"));

    // Out to a fresh layout: same digest, same blobs.
    let out = work.join("out");
    let r = copy_json(&[&dst_ref, &format!("oci:{}:saved", out.display()), "--src-insecure"]);
    assert_eq!(r["digest"], img.manifest.digest.as_str());
    let layout = OciLayout::open(&out);
    assert_eq!(layout.resolve("saved").digest, img.manifest.digest);
    assert_eq!(layout.blob(&img.manifest.digest), img.manifest_bytes);
    let src_layout = OciLayout::open(&src);
    for d in img.blob_digests() {
        assert_eq!(layout.blob(&d), src_layout.blob(&d), "blob {d}");
    }
    // skopeo reads the layout we wrote.
    assert_eq!(digest_of(&sk.inspect_raw(&format!("oci:{}:saved", out.display()))), img.manifest.digest);
}

/// A two-platform OCI index travels whole: index digest kept, both children and all
/// their blobs present at the far end, in a registry and in a layout.
#[test]
fn copy_multi_arch_index_whole() {
    let sr = Registry::start_specreg_with(&["--no-fsync"]);
    let dist = Registry::start_distribution();
    let sk = Skopeo::new();
    let work = TempTree::new("copy-multi");
    let src = work.join("src");
    let idx = multi_arch_layout(&src, "multi", 256 << 10);
    let info = info_path(&sr);

    let on_dist = format!("docker://{}/e2e/multi:v1", dist.addr());
    let r = copy_json(&[&format!("oci:{}:multi", src.display()), &on_dist, "--dst-insecure"]);
    assert_eq!(r["digest"], idx.index.digest.as_str());
    assert_eq!(r["manifests"].as_array().unwrap().len(), 3, "index and two children: {r:#}");
    // The shared base layer moves once: 2 configs + 1 base + 2 tops.
    assert_eq!(u(&r["blobs_copied"]), 5, "{r:#}");

    let on_sr = format!("docker://{}/e2e/multi:v1", sr.addr());
    let r = copy_json(&[&on_dist, &on_sr, "--src-insecure", "--dst-info", &info]);
    assert_eq!(r["digest"], idx.index.digest.as_str());
    assert_eq!(digest_of(&skopeo_raw_auth(&sk, &sr, &on_sr)), idx.index.digest);
    let served = sr.manifest("e2e/multi", "v1");
    assert_eq!(served.bytes, idx.index_bytes);
    let all = sr.assert_complete("e2e/multi", &served);
    for c in &idx.children {
        assert!(all.contains(&c.manifest.digest), "child {} missing", c.arch);
        assert_eq!(sr.manifest("e2e/multi", &c.manifest.digest).bytes, c.manifest_bytes);
        for d in c.blob_digests() {
            assert!(all.contains(&d), "{} blob {d} missing", c.arch);
        }
    }
    // skopeo sees both platforms by digest.
    for c in &idx.children {
        let child = format!("docker://{}/e2e/multi@{}", sr.addr(), c.manifest.digest);
        assert_eq!(digest_of(&skopeo_raw_auth(&sk, &sr, &child)), c.manifest.digest);
    }

    // Into a layout: index and children as blobs.
    let out = work.join("out");
    copy_json(&[&on_sr, &format!("oci:{}", out.display()), "--src-info", &info]);
    let layout = OciLayout::open(&out);
    assert_eq!(layout.resolve("v1").digest, idx.index.digest, "the source tag names it");
    for c in &idx.children {
        assert_eq!(layout.blob(&c.manifest.digest), c.manifest_bytes);
        for d in c.blob_digests() {
            assert!(layout.has_blob(&d), "blob {d}");
            layout.blob(&d);
        }
    }
}

/// Three changes in a gate queue: changes 1 and 2 build images into their buildset
/// registries and push them to the intermediate registry; change 3's buildset registry
/// pulls ahead. For `org/app`, built by both, change 2's digest wins; `org/lib`, built
/// only by change 1, comes from change 1.
#[test]
fn gate_queue_of_three_changes() {
    let ir = Registry::start_specreg_with(&["--no-fsync"]);
    let brs: Vec<Registry> = (0..3).map(|_| Registry::start_specreg_with(&["--no-fsync"])).collect();
    let sk = Skopeo::new();
    let work = TempTree::new("gate");

    // "Builds": images pushed into each change's buildset registry by skopeo, as a build
    // job's push would. Change 1's app and lib share a base layer.
    let build = |change: usize, names: &[&str]| -> Vec<BuiltImage> {
        let dir = work.join(format!("change{change}"));
        let mut w = OciLayoutWriter::new(&dir);
        let base = unique_marker(&format!("base{change}"));
        let mut out = Vec::new();
        for name in names {
            let img = w.add_image("amd64", &base, &unique_marker(&format!("c{change}-{name}")), 200 << 10);
            w.tag(name, &img.manifest);
            let br = &brs[change - 1];
            sk.copy(&["--dest-creds", &br.info().creds()], &format!("oci:{}:{name}", dir.display()), &format!("docker://{}/org/{name}:latest", br.addr()));
            out.push(img);
        }
        out
    };
    let c1 = build(1, &["app", "lib"]);
    let c2 = build(2, &["app"]);
    assert_ne!(c1[0].manifest.digest, c2[0].manifest.digest);

    // Post-run of changes 1 and 2: BR -> IR, printing the artifacts to return.
    let ir_info = info_path(&ir);
    let push = |change: usize, build_id: &str, images: &[&str]| -> Value {
        let mut cmd = specreg();
        cmd.args(["push-intermediate", "--build", build_id, "--from", &info_path(&brs[change - 1]), "--to", &ir_info]);
        for i in images {
            cmd.args(["--image", i]);
        }
        let o = run(&mut cmd);
        assert!(o.success(), "push-intermediate failed\n{}", o.describe());
        let doc: Value = serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", o.describe()));
        doc
    };
    let b1 = "4f0e4b8a9c1d4e7fa0b1c2d3e4f50617";
    let b2 = "9a8b7c6d5e4f40312a1b2c3d4e5f6071";
    let doc1 = push(1, b1, &["org/app:latest", "docker.io/org/lib:latest"]);
    let doc2 = push(2, b2, &["org/app:latest"]);
    let ir_host = ir.info().registry();
    assert_eq!(
        doc1,
        json!({"zuul": {"artifacts": [
            {"name": "org/app:latest", "url": format!("docker://{ir_host}/org/app:{b1}_latest"),
             "metadata": {"type": "container_image", "repository": "org/app", "tag": "latest"}},
            {"name": "docker.io/org/lib:latest", "url": format!("docker://{ir_host}/docker.io/org/lib:{b1}_latest"),
             "metadata": {"type": "container_image", "repository": "docker.io/org/lib", "tag": "latest"}},
        ]}})
    );
    // The IR holds them under the build-prefixed tags, byte for byte.
    assert_eq!(ir.manifest("org/app", &format!("{b1}_latest")).digest, c1[0].manifest.digest);
    assert_eq!(ir.manifest("docker.io/org/lib", &format!("{b1}_latest")).digest, c1[1].manifest.digest);
    assert_eq!(ir.manifest("org/app", &format!("{b2}_latest")).digest, c2[0].manifest.digest);
    let lib_on_ir = ir.manifest("docker.io/org/lib", &format!("{b1}_latest"));
    ir.assert_complete("docker.io/org/lib", &lib_on_ir);

    // What Zuul hands change 3: furthest ahead first, plus things to skip.
    let with_item = |doc: &Value, change: u64| -> Vec<Value> {
        doc["zuul"]["artifacts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                let mut a = a.clone();
                a["project"] = json!("org/project");
                a["change"] = json!(change.to_string());
                a["patchset"] = json!("1");
                a["job"] = json!("build-image");
                a
            })
            .collect()
    };
    let mut artifacts = vec![json!({"name": "logs", "url": "https://logs.example/1/"})];
    artifacts.extend(with_item(&doc1, 1));
    artifacts.push(json!({"name": "docs", "url": "https://docs.example/", "metadata": {"type": "docs_archive"}}));
    artifacts.extend(with_item(&doc2, 2));
    let file = work.join("artifacts.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&json!({"zuul": {"artifacts": artifacts}})).unwrap()).unwrap();

    let br3 = &brs[2];
    let o = run(specreg().args(["pull-ahead", "--artifacts", &file.display().to_string(), "--to", &info_path(br3), "--from-info", &ir_info]));
    assert!(o.success(), "pull-ahead failed\n{}", o.describe());
    assert!(o.stderr.contains("skipped: no metadata"), "the artifact without metadata is logged\n{}", o.stderr);

    // Change 2 is nearest: its app wins; lib (docker.io/ dropped) is change 1's.
    let app = br3.manifest("org/app", "latest");
    assert_eq!(app.digest, c2[0].manifest.digest, "the nearest change ahead wins");
    assert_eq!(app.bytes, c2[0].manifest_bytes);
    br3.assert_complete("org/app", &app);
    let lib = br3.manifest("org/lib", "latest");
    assert_eq!(lib.digest, c1[1].manifest.digest);
    br3.assert_complete("org/lib", &lib);
    // skopeo agrees.
    let raw = skopeo_raw_auth(&sk, br3, &format!("docker://{}/org/app:latest", br3.addr()));
    assert_eq!(digest_of(&raw), c2[0].manifest.digest);

    // An unreachable intermediate registry is a clear error.
    let dead = work.join("dead.json");
    let dead_doc = json!([{"name": "org/app:latest", "url": "docker://127.0.0.1:9/org/app:x_latest",
        "metadata": {"type": "container_image", "repository": "org/app", "tag": "latest"}}]);
    std::fs::write(&dead, dead_doc.to_string()).unwrap();
    let o = run(specreg().args(["pull-ahead", "--artifacts", &dead.display().to_string(), "--to", &info_path(br3), "--from-insecure"]));
    assert!(!o.success(), "pull-ahead from a dead registry must fail\n{}", o.describe());
    assert!(o.stderr.contains("intermediate registry 127.0.0.1:9 is unreachable"), "{}", o.stderr);
    assert_eq!(br3.manifest("org/app", "latest").digest, c2[0].manifest.digest, "nothing changed");
}

/// Shared base layers: push-intermediate of two images mounts the second's base layer
/// from the first's repository instead of uploading it again.
#[test]
fn push_intermediate_mounts_shared_layers() {
    let ir = Registry::start_specreg_with(&["--no-fsync"]);
    let br = Registry::start_specreg_with(&["--no-fsync"]);
    let work = TempTree::new("mounts");
    let dir = work.join("layout");
    let mut w = OciLayoutWriter::new(&dir);
    let base = unique_marker("shared");
    for name in ["one", "two"] {
        let img = w.add_image("amd64", &base, &unique_marker(name), 64 << 10);
        w.tag(name, &img.manifest);
        copy_json(&[&format!("oci:{}:{name}", dir.display()), &format!("docker://{}/org/{name}:latest", br.addr()), "--dst-info", &info_path(&br)]);
    }
    let o = run(specreg().args(["push-intermediate", "--build", "b0", "--image", "org/one:latest", "--image", "org/two:latest", "--from", &info_path(&br), "--to", &info_path(&ir)]));
    assert!(o.success(), "{}", o.describe());
    assert!(o.stderr.contains("1 mounted"), "the shared base layer is mounted\n{}", o.stderr);
    for name in ["one", "two"] {
        let m = ir.manifest(&format!("org/{name}"), "b0_latest");
        assert_eq!(m.digest, br.manifest(&format!("org/{name}"), "latest").digest);
        ir.assert_complete(&format!("org/{name}"), &m);
    }
}


/// Credentials from docker's config.json: an `auths` entry (base64 `user:password`) for
/// one registry and a credential helper (`credHelpers`, run from PATH) for another; the
/// CA from `--src-ca` / `--dst-cert-dir`. Without credentials the copy is refused.
#[test]
fn copy_with_docker_config_credentials() {
    let a = Registry::start_specreg_with(&["--no-fsync"]);
    let b = Registry::start_specreg_with(&["--no-fsync"]);
    let work = TempTree::new("copy-authfile");
    let img = single_arch_layout(&work.join("src"), "v1", 64 << 10);
    copy_json(&[&format!("oci:{}:v1", work.join("src").display()), &format!("docker://{}/e2e/app:v1", a.addr()), "--dst-info", &info_path(&a)]);

    let ca_a = work.join("a-ca.pem");
    std::fs::write(&ca_a, &a.info().cert).unwrap();
    let cert_dir_b = write_ca_dir(&work.join("b-certs"), &b.info().cert);
    // The helper answers for registry b only, with b's credentials.
    let bin = work.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-e2e");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 2\nread server\n[ \"$server\" = \"{}\" ] || {{ echo 'credentials not found'; exit 1; }}\nprintf '{{\"Username\":\"%s\",\"Secret\":\"%s\"}}' '{}' '{}'\n",
            b.addr(),
            b.info().username,
            b.info().password
        ),
    )
    .unwrap();
    std::fs::set_permissions(&helper, <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755)).unwrap();
    let config = work.join("config.json");
    let auth = b64(a.info().creds().as_bytes());
    std::fs::write(&config, json!({"auths": {a.addr(): {"auth": auth}}, "credHelpers": {b.addr(): "e2e"}}).to_string()).unwrap();

    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let src = format!("docker://{}/e2e/app:v1", a.addr());
    let dst = format!("docker://{}/e2e/app:v1", b.addr());
    let out = run_ok(specreg().env("PATH", &path).args(["copy", "--json", "--authfile", &config.display().to_string(), "--src-ca", &ca_a.display().to_string(), "--dst-cert-dir", &cert_dir_b.display().to_string(), &src, &dst]));
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["digest"], img.manifest.digest.as_str());
    let m = b.manifest("e2e/app", "v1");
    assert_eq!(m.bytes, img.manifest_bytes);
    b.assert_complete("e2e/app", &m);

    // An empty config: anonymous, refused by registry a, with its URL in the message.
    let empty = work.join("empty.json");
    std::fs::write(&empty, "{}").unwrap();
    let never = work.join("never");
    let o = run_fails(specreg().args(["copy", "--authfile", &empty.display().to_string(), "--src-ca", &ca_a.display().to_string(), &src, &format!("oci:{}", never.display())]));
    assert!(o.stderr.contains("401") && o.stderr.contains(a.addr()), "{}", o.describe());
    assert!(!never.exists(), "a failed copy creates no layout");
}
