//! The Kubernetes manifests (`deploy/kubernetes`, README "Running several replicas"): the
//! kustomization renders and every object validates offline against the Kubernetes schemas
//! (`tests/kubernetes/render.py`, with kubernetes-validate, which scripts/test installs); the
//! ConfigMap's `proxy.toml` passes `jitgate check`; and the manifests agree with that config
//! and with the gateway: probes on the admin port at `/readyz` and `/healthz`, the config
//! mounted as a folder (no `subPath`, so the watcher sees the kubelet's `..data` swap) where
//! `serve --config` reads it, the signing key and webhook secrets from the Secret, a grace
//! period covering `shutdown_grace`, the hardened pod, and separate Services for the planes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use jitgate_rules::config::Config;
use jitgate_rules::RuleTable;
use serde_json::Value;

const JITGATE: &str = env!("CARGO_BIN_EXE_jitgate");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

// === helpers ===

/// The rendered objects of deploy/kubernetes, each validated against the schemas; fails with
/// the validator's reasons.
fn render() -> Vec<Value> {
    let out = Command::new("python3")
        .arg(Path::new(ROOT).join("tests/kubernetes/render.py"))
        .arg(Path::new(ROOT).join("deploy/kubernetes"))
        .output()
        .expect("python3 runs (scripts/test installs it and kubernetes-validate)");
    assert!(
        out.status.success(),
        "deploy/kubernetes does not render or validate:\n{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    let parsed: Value = serde_json::from_slice(&out.stdout).expect("render.py prints JSON");
    parsed["objects"].as_array().expect("objects").clone()
}

fn object<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("deploy/kubernetes has no {kind}/{name}"))
}

fn str_of<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {v}"))
}

fn u64_of(v: &Value, what: &str) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("{what} is not a whole number: {v}"))
}

/// The Deployment's pod spec and its one container.
fn pod(objects: &[Value]) -> (&Value, &Value) {
    let spec = &object(objects, "Deployment", "jitgate")["spec"]["template"]["spec"];
    let containers = spec["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1, "one container: {containers:?}");
    (spec, &containers[0])
}

/// The path `serve --config` is given in the container's arguments.
fn config_arg(container: &Value) -> PathBuf {
    let args: Vec<&str> = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| str_of(a, "an argument"))
        .collect();
    assert_eq!(args.first(), Some(&"serve"), "{args:?}");
    let at = args
        .iter()
        .position(|a| *a == "--config")
        .expect("serve --config FILE");
    PathBuf::from(args.get(at + 1).expect("a file after --config"))
}

/// The ConfigMap's `proxy.toml`.
fn proxy_toml(objects: &[Value]) -> &str {
    str_of(
        &object(objects, "ConfigMap", "jitgate-config")["data"]["proxy.toml"],
        "the ConfigMap's proxy.toml",
    )
}

/// The ConfigMap's `proxy.toml`, as the gateway's config model reads it.
fn config(objects: &[Value]) -> Config {
    let table = RuleTable::parse(proxy_toml(objects), Path::new("/etc/jitgate/proxy.toml"))
        .unwrap_or_else(|d| panic!("the ConfigMap's proxy.toml is refused: {d:?}"));
    table.config().clone()
}

/// The container port named `name`.
fn port(container: &Value, name: &str) -> u64 {
    let p = container["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no container port named {name}"));
    u64_of(&p["containerPort"], "containerPort")
}

/// The volume mounted at the folder holding `file`, and its mount.
fn mount_of<'a>(spec: &'a Value, container: &'a Value, file: &Path) -> (&'a Value, &'a Value) {
    let folder = file.parent().expect("a folder");
    let mount = container["volumeMounts"]
        .as_array()
        .expect("volumeMounts")
        .iter()
        .find(|m| Path::new(str_of(&m["mountPath"], "mountPath")) == folder)
        .unwrap_or_else(|| panic!("no volume is mounted at {}", folder.display()));
    let volume = spec["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap_or_else(|| panic!("no volume {}", mount["name"]));
    (volume, mount)
}

fn labels_match(selector: &Value, labels: &Value) -> bool {
    let wanted = selector.as_object().expect("matchLabels");
    !wanted.is_empty() && wanted.iter().all(|(k, v)| labels[k] == *v)
}

// === tests ===

#[test]
fn the_configmap_proxy_toml_passes_jitgate_check() {
    let objects = render();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("proxy.toml");
    std::fs::write(&file, proxy_toml(&objects)).unwrap();
    let out = Command::new(JITGATE)
        .arg("check")
        .arg(&file)
        .output()
        .expect("run jitgate check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "jitgate check refuses the ConfigMap's proxy.toml:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(" 0 warning(s)"), "{stdout}");
}

#[test]
fn probes_ports_and_mounts_agree_with_the_config() {
    let objects = render();
    let cfg = config(&objects);
    let (spec, c) = pod(&objects);

    // The ports the config listens on, named as the probes, Services and policy use them.
    assert_eq!(port(c, "http"), u64::from(cfg.server.listen.port()));
    assert_eq!(port(c, "admin"), u64::from(cfg.server.admin_listen.port()));
    assert!(
        cfg.server.listen.ip().is_unspecified() && cfg.server.admin_listen.ip().is_unspecified(),
        "a pod is reached on its own address, not loopback"
    );
    assert!(cfg.server.admin_allow_remote);

    // Both probes on the admin plane: readiness /readyz, liveness /healthz.
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}: {get}");
        assert_eq!(get["port"], "admin", "{probe} on the admin port: {get}");
    }
    // /readyz pings the store for up to 2 s before answering.
    assert!(u64_of(&c["readinessProbe"]["timeoutSeconds"], "timeoutSeconds") > 2);

    // No mount uses subPath (a copy the kubelet's `..data` swap never reaches), and the
    // config is the ConfigMap mounted as a folder where `serve --config` reads it.
    for m in c["volumeMounts"].as_array().unwrap() {
        assert!(m.get("subPath").is_none(), "subPath mount: {m}");
        assert!(m.get("subPathExpr").is_none(), "subPathExpr mount: {m}");
        assert_eq!(m["readOnly"], true, "{m}");
    }
    let file = config_arg(c);
    let (volume, _) = mount_of(spec, c, &file);
    assert_eq!(volume["configMap"]["name"], "jitgate-config", "{volume}");
    assert_eq!(
        file.file_name().and_then(|n| n.to_str()),
        Some("proxy.toml"),
        "the ConfigMap's key is the file"
    );
    assert!(cfg.server.watch, "hot reload needs watch = true");

    // The signing key is a file of the Secret's mount, and exists in the Secret.
    let key = cfg
        .approvals
        .signing_key
        .clone()
        .expect("replicas share a signing_key");
    let (volume, _) = mount_of(spec, c, &key);
    let secret = str_of(&volume["secret"]["secretName"], "secretName");
    let name = key.file_name().and_then(|n| n.to_str()).unwrap();
    let stored = &object(&objects, "Secret", secret)["stringData"];
    assert!(stored.get(name).is_some(), "{secret} has no {name}");

    // Every webhook secret the config names comes from a Secret.
    for n in &cfg.notify {
        let Some(var) = &n.secret_env else { continue };
        let env = c["env"]
            .as_array()
            .expect("env")
            .iter()
            .find(|e| e["name"] == var.as_str())
            .unwrap_or_else(|| panic!("{var} (channel {}) is not set", n.name));
        let from = &env["valueFrom"]["secretKeyRef"];
        let key = str_of(&from["key"], "secretKeyRef.key");
        let stored = &object(&objects, "Secret", str_of(&from["name"], "secret"))["stringData"];
        assert!(stored.get(key).is_some(), "{env}");
    }

    // The pod is given time for the preStop sleep and the whole shutdown_grace.
    let sleep = u64_of(
        &c["lifecycle"]["preStop"]["sleep"]["seconds"],
        "preStop sleep",
    );
    let grace = u64_of(
        &spec["terminationGracePeriodSeconds"],
        "terminationGracePeriodSeconds",
    );
    assert!(
        grace >= sleep + cfg.server.shutdown_grace.as_secs() + 5,
        "terminationGracePeriodSeconds {grace} < preStop {sleep} + shutdown_grace {:?} + 5",
        cfg.server.shutdown_grace
    );
}

#[test]
fn the_pod_runs_non_root_read_only_without_privileges() {
    let objects = render();
    let (spec, c) = pod(&objects);
    assert_eq!(spec["automountServiceAccountToken"], false);
    let account = str_of(&spec["serviceAccountName"], "serviceAccountName");
    assert_eq!(
        object(&objects, "ServiceAccount", account)["automountServiceAccountToken"],
        false
    );
    let sc = &c["securityContext"];
    for ctx in [&spec["securityContext"], sc] {
        assert_eq!(ctx["runAsNonRoot"], true, "{ctx}");
        assert_eq!(ctx["runAsUser"], 10001, "{ctx}");
        assert_eq!(ctx["seccompProfile"]["type"], "RuntimeDefault", "{ctx}");
    }
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    for r in ["requests", "limits"] {
        for what in ["cpu", "memory"] {
            assert!(c["resources"][r][what].is_string(), "resources.{r}.{what}");
        }
    }
    // The image runs as the same uid.
    let dockerfile = std::fs::read_to_string(Path::new(ROOT).join("deploy/Dockerfile")).unwrap();
    assert!(
        dockerfile.contains("\nUSER 10001:10001\n"),
        "deploy/Dockerfile"
    );
}

#[test]
fn the_planes_have_their_own_services_and_the_admin_port_is_fenced() {
    let objects = render();
    let (_, c) = pod(&objects);
    let deployment = object(&objects, "Deployment", "jitgate");
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];

    let data = &object(&objects, "Service", "jitgate")["spec"];
    let admin = &object(&objects, "Service", "jitgate-admin")["spec"];
    for (svc, target) in [(data, "http"), (admin, "admin")] {
        assert!(labels_match(&svc["selector"], pod_labels), "{svc}");
        let targets: Vec<&Value> = svc["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| &p["targetPort"])
            .collect();
        assert_eq!(targets, [target], "one plane per Service: {svc}");
        assert_ne!(svc["type"], "LoadBalancer", "{svc}");
    }
    assert_ne!(admin["type"], "NodePort");

    // The admin port is only reachable from the peers listed; the data port from anywhere.
    let policy = &object(&objects, "NetworkPolicy", "jitgate")["spec"];
    assert!(labels_match(
        &policy["podSelector"]["matchLabels"],
        pod_labels
    ));
    assert_eq!(policy["policyTypes"], serde_json::json!(["Ingress"]));
    let rules = policy["ingress"].as_array().unwrap();
    let admin_port = port(c, "admin");
    for rule in rules {
        let ports = rule["ports"]
            .as_array()
            .expect("every rule names its ports");
        let opens_admin = ports
            .iter()
            .any(|p| p["port"] == "admin" || p["port"] == admin_port);
        if opens_admin {
            let from = rule["from"].as_array().expect("admin rule names its peers");
            assert!(!from.is_empty(), "{rule}");
            for peer in from {
                assert!(
                    peer.get("ipBlock").is_none(),
                    "admin open to addresses: {peer}"
                );
                let open_namespaces = peer["namespaceSelector"]
                    .as_object()
                    .is_some_and(|s| s.is_empty());
                let any_pod = peer["podSelector"].as_object().is_none_or(|s| s.is_empty());
                assert!(
                    !(open_namespaces && any_pod),
                    "admin open to every pod of every namespace: {peer}"
                );
            }
        }
    }
    assert!(
        rules.iter().any(|r| r["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["port"] == "admin")),
        "a rule admits the admin port"
    );
    assert!(
        rules.iter().any(|r| r.get("from").is_none()
            && r["ports"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["port"] == "http")),
        "the data port is open"
    );
}

#[test]
fn the_budget_and_the_autoscaler_hold_the_replicas() {
    let objects = render();
    let deployment = object(&objects, "Deployment", "jitgate");
    let replicas = u64_of(&deployment["spec"]["replicas"], "replicas");
    assert!(replicas >= 3, "{replicas}");
    assert!(labels_match(
        &object(&objects, "PodDisruptionBudget", "jitgate")["spec"]["selector"]["matchLabels"],
        &deployment["spec"]["template"]["metadata"]["labels"]
    ));
    let hpa = &object(&objects, "HorizontalPodAutoscaler", "jitgate")["spec"];
    assert_eq!(hpa["scaleTargetRef"]["kind"], "Deployment");
    assert_eq!(hpa["scaleTargetRef"]["name"], "jitgate");
    assert_eq!(u64_of(&hpa["minReplicas"], "minReplicas"), replicas);
    assert_eq!(hpa["metrics"][0]["resource"]["name"], "cpu");
    let spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
        .as_array()
        .expect("topologySpreadConstraints");
    assert!(spread
        .iter()
        .any(|t| t["topologyKey"] == "kubernetes.io/hostname"));
}
