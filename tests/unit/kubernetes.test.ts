/**
 * deploy/kubernetes/ cannot be applied to a cluster here, so it is read as
 * a cluster would read it and checked against the code it runs: the mounts
 * the agent needs (with the propagation that makes new pod namespaces
 * appear), only the capabilities it needs (each explained), the probe and
 * scrape paths the agent serves, an image and arguments the CLI accepts
 * (parsed by the CLI's own option table), a Containerfile whose final stage
 * has no compiler and whose objects are the ones the agent is told to load,
 * and a ConfigMap made from the very policies the image was built from.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { parseAllDocuments, type Document } from "yaml";
import { commandOptions, parseAgentArguments } from "../../src/cli.js";
import { NETNS_DIR } from "../../src/model/namespace.js";
import { BPFFS } from "../../src/kernel/pins.js";
import { LOCK_DIR } from "../../src/host/lock.js";
import { validPolicies } from "../../src/reconcile/index.js";

const DIR = "deploy/kubernetes";
const VERSION = (JSON.parse(readFileSync("package.json", "utf8")) as { version: string }).version;

interface Container {
  name: string;
  image: string;
  command?: string[];
  args?: string[];
  env?: { name: string; value: string }[];
  ports?: { name: string; containerPort: number }[];
  readinessProbe?: { httpGet?: { path: string; port: string | number }; exec?: { command: string[] } };
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
  securityContext: {
    runAsUser?: number;
    privileged?: boolean;
    allowPrivilegeEscalation?: boolean;
    readOnlyRootFilesystem?: boolean;
    capabilities: { drop: string[]; add: string[] };
    seccompProfile?: { type: string };
  };
  volumeMounts: { name: string; mountPath: string; mountPropagation?: string; readOnly?: boolean; subPath?: string }[];
}

interface Volume {
  name: string;
  hostPath?: { path: string; type?: string };
  configMap?: { name: string };
  emptyDir?: object;
}

interface PodSpec {
  hostNetwork?: boolean;
  serviceAccountName?: string;
  automountServiceAccountToken?: boolean;
  containers: Container[];
  volumes: Volume[];
}

interface Manifest {
  kind: string;
  metadata: { name: string; namespace?: string };
  automountServiceAccountToken?: boolean;
  spec?: { template: { metadata: { annotations?: Record<string, string> }; spec: PodSpec } };
}

function documents(file: string): { source: string; docs: Document.Parsed[] } {
  const source = readFileSync(path.join(DIR, file), "utf8");
  const docs = parseAllDocuments(source);
  for (const doc of docs) assert.deepEqual(doc.errors, [], `${file} parses`);
  return { source, docs: docs as Document.Parsed[] };
}

function manifests(file: string): Manifest[] {
  return documents(file).docs.map((doc) => doc.toJS() as Manifest);
}

const agentManifests = manifests("agent.yaml");
const daemonSet = agentManifests.find((m) => m.kind === "DaemonSet" && m.metadata.name === "intercept-agent")!;
const pod = daemonSet.spec!.template.spec;
const agent = pod.containers.find((c) => c.name === "agent")!;
const cleanupPod = manifests("uninstall.yaml").find((m) => m.kind === "DaemonSet")!.spec!.template.spec;
const cleanup = cleanupPod.containers[0]!;

function mount(container: Container, spec: PodSpec, mountPath: string) {
  const found = container.volumeMounts.find((m) => m.mountPath === mountPath);
  assert.ok(found, `${container.name} mounts ${mountPath}`);
  return { mount: found, volume: spec.volumes.find((v) => v.name === found.name)! };
}

/** The agent's arguments as its CLI reads them: `intercept agent …`. */
function agentArguments(args: string[]) {
  assert.equal(args[0], "agent");
  return parseAgentArguments(args.slice(1));
}

/** Containerfile instructions, continuation lines joined, comments dropped. */
function containerfile(): { instruction: string; rest: string; stage: number }[] {
  const joined = readFileSync(path.join(DIR, "Containerfile"), "utf8").replace(/\\\n/g, " ");
  let stage = -1;
  return joined
    .split("\n")
    .filter((line) => line.trim() && !line.trimStart().startsWith("#"))
    .map((line) => {
      const [instruction, ...rest] = line.trim().split(/\s+/);
      if (instruction === "FROM") stage++;
      return { instruction: instruction!, rest: rest.join(" "), stage };
    });
}

test("the agent runs in the host's network namespace, as root with no token for the API it never calls", () => {
  assert.equal(pod.hostNetwork, true);
  const account = agentManifests.find((m) => m.kind === "ServiceAccount")!;
  assert.equal(pod.serviceAccountName, account.metadata.name);
  assert.equal(account.automountServiceAccountToken, false);
  assert.equal(pod.automountServiceAccountToken, false);
  assert.equal(agent.securityContext.runAsUser, 0);
});

test("host mounts: bpffs, the namespace folder with HostToContainer propagation, the lock folder, cgroup2, the policies", () => {
  const bpffs = mount(agent, pod, BPFFS);
  assert.equal(bpffs.volume.hostPath?.path, BPFFS);
  // NETNS_DIR is /var/run/netns; /var/run is a symlink to /run in the image and on the host.
  const netnsPath = NETNS_DIR.replace(/^\/var\/run\//, "/run/");
  const netns = mount(agent, pod, netnsPath);
  assert.equal(netns.volume.hostPath?.path, netnsPath);
  assert.equal(
    netns.mount.mountPropagation,
    "HostToContainer",
    "namespaces bind-mounted after the agent started must appear in it",
  );
  const locks = mount(agent, pod, path.dirname(LOCK_DIR));
  assert.equal(
    locks.volume.hostPath?.path,
    path.dirname(LOCK_DIR),
    "locks are shared with the host and the next agent",
  );
  const cgroup = mount(agent, pod, "/sys/fs/cgroup");
  assert.equal(cgroup.volume.hostPath?.path, "/sys/fs/cgroup");
  const { paths } = agentArguments(agent.args!);
  assert.equal(paths.length, 1);
  const policies = mount(agent, pod, paths[0]!);
  assert.equal(policies.volume.configMap?.name, "intercept-policies");
  assert.equal(policies.mount.readOnly, true);
  for (const needed of [BPFFS, netnsPath, path.dirname(LOCK_DIR)]) {
    assert.ok(
      cleanup.volumeMounts.some((m) => m.mountPath === needed),
      `the cleanup mounts ${needed} as well`,
    );
  }
  assert.equal(cleanup.volumeMounts.find((m) => m.mountPath === netnsPath)?.mountPropagation, "HostToContainer");
});

test("least privilege: not privileged, all capabilities dropped, only BPF, NET_ADMIN and SYS_ADMIN added, each with its reason", () => {
  const { source, docs } = documents("agent.yaml");
  for (const container of [agent, cleanup]) {
    const context = container.securityContext;
    assert.equal(context.privileged, false);
    assert.equal(context.allowPrivilegeEscalation, false);
    assert.equal(context.readOnlyRootFilesystem, true);
    assert.deepEqual(context.capabilities.drop, ["ALL"]);
    assert.deepEqual([...context.capabilities.add].sort(), ["BPF", "NET_ADMIN", "SYS_ADMIN"]);
    assert.equal(context.seccompProfile?.type, "RuntimeDefault");
  }
  const capabilities = docs[1]!.getIn(
    ["spec", "template", "spec", "containers", 0, "securityContext", "capabilities"],
    true,
  ) as { range: [number, number, number] };
  const explained = source.slice(capabilities.range[0], capabilities.range[2]);
  for (const capability of agent.securityContext.capabilities.add) {
    assert.match(explained, new RegExp(`# CAP_${capability}: \\S`), `CAP_${capability} is explained where it is added`);
  }
});

test("every argument of the agent is an option `intercept agent` accepts, and they mean what the deployment needs", () => {
  assert.deepEqual(agent.command, ["intercept"]);
  const flags = agent.args!.filter((arg) => arg.startsWith("--")).map((arg) => arg.slice(2));
  const accepted = commandOptions("agent");
  for (const flag of flags) assert.ok(flag in accepted, `--${flag} is an agent option`);
  const { options } = agentArguments(agent.args!);
  assert.deepEqual(options.namespaces, { kind: "matching", globs: ["cni-*"] });
  assert.equal(options.keep, true, "rolling upgrades must leave the datapath to the next agent");
  assert.equal(options.logFormat, "json");
  assert.equal(options.metrics?.host, "0.0.0.0");
  const cleanupMatch = cleanup.env?.find((e) => e.name === "NETNS_MATCH")?.value;
  assert.equal(cleanupMatch, "cni-*", "uninstall destroys the namespaces the agent serves");
});

test("readiness from /healthz and Prometheus scraping /metrics, both on the agent's --metrics port", () => {
  const { options } = agentArguments(agent.args!);
  const port = agent.ports!.find((p) => p.name === agent.readinessProbe!.httpGet!.port)!;
  assert.equal(port.containerPort, options.metrics!.port);
  assert.equal(agent.readinessProbe!.httpGet!.path, "/healthz");
  const annotations = daemonSet.spec!.template.metadata.annotations!;
  assert.equal(annotations["prometheus.io/scrape"], "true");
  assert.equal(Number(annotations["prometheus.io/port"]), options.metrics!.port);
  assert.equal(annotations["prometheus.io/path"], "/metrics");
  assert.ok(agent.resources?.requests?.cpu && agent.resources.requests.memory, "resource requests");
});

test("the image is this version's, built by the Containerfile without clang in its final stage, with the objects the agent loads", () => {
  assert.equal(agent.image, `intercept-agent:${VERSION}`);
  assert.equal(cleanup.image, agent.image);
  const lines = containerfile();
  const stages = Math.max(...lines.map((l) => l.stage)) + 1;
  assert.equal(stages, 2, "a build stage and a final stage");
  assert.ok(
    lines.some((l) => l.instruction === "ARG" && l.rest === `INTERCEPT_PACKAGE=./intercept-bpf-${VERSION}.tgz`),
    "this version's tarball, as `npm pack` names it",
  );
  const build = lines.find(
    (l) => l.stage === 0 && l.instruction === "RUN" && / intercept build policies --out /.test(l.rest),
  );
  assert.ok(build, "the build stage builds the policies' objects");
  const out = / --out (\S+)/.exec(build.rest)![1]!;
  const final = lines.filter((l) => l.stage === 1);
  const installs = final
    .filter((l) => l.instruction === "RUN")
    .map((l) => l.rest)
    .join(" ");
  for (const tool of ["iproute2", "bpftool", "util-linux"]) assert.match(installs, new RegExp(`\\b${tool}\\b`));
  assert.doesNotMatch(final.map((l) => l.rest).join(" "), /clang|llvm/, "no compiler on the nodes");
  assert.ok(
    final.some((l) => l.instruction === "COPY" && l.rest === `--from=build ${out} ${out}`),
    "the objects are copied into the final stage",
  );
  assert.equal(agentArguments(agent.args!).options.objects, out, "the agent loads the image's objects");
  const entrypoint = JSON.parse(final.find((l) => l.instruction === "ENTRYPOINT")!.rest) as string[];
  const cmd = JSON.parse(final.find((l) => l.instruction === "CMD")!.rest) as string[];
  assert.deepEqual(entrypoint, agent.command);
  assert.deepEqual(cmd, agent.args, "the image run on its own does what the DaemonSet runs");
});

test("the ConfigMap is generated from the policies the image is built from, under a fixed name, and they are valid", async () => {
  const [kustomization] = manifests("kustomization.yaml") as unknown as [
    {
      resources: string[];
      configMapGenerator: { name: string; files: string[] }[];
      generatorOptions: { disableNameSuffixHash: boolean };
    },
  ];
  assert.deepEqual(kustomization.resources.sort(), ["agent.yaml", "namespace.yaml"]);
  const generator = kustomization.configMapGenerator.find((g) => g.name === "intercept-policies")!;
  assert.deepEqual(
    generator.files.sort(),
    readdirSync(path.join(DIR, "policies"))
      .map((file) => `policies/${file}`)
      .sort(),
  );
  assert.equal(
    kustomization.generatorOptions.disableNameSuffixHash,
    true,
    "updated in place (..data swap), not rolled out under a new name",
  );
  const { policies } = await validPolicies([path.join(DIR, "policies")]);
  assert.equal(policies.length, generator.files.length);
});

test("the uninstall script is valid sh, and its pods are ready only once their node is clean", () => {
  const script = cleanup.args![0]!;
  assert.deepEqual(cleanup.command, ["/bin/sh", "-c"]);
  execFileSync("sh", ["-n", "-c", script]);
  assert.match(script, /intercept destroy --netns /);
  assert.deepEqual(cleanup.readinessProbe?.exec?.command, ["cat", "/tmp/clean"]);
  assert.match(script, /touch \/tmp\/clean/);
});
