// Dependency rules: the layering README.md promises ("Dependencies point one way"), checked by
// hack/lint.sh (run by hack/test.sh, so `make test`) so a wrong import fails the build rather than
// a review. Each rule's comment is what the README says; depcruise prints it with the offending import.
//
//   cli, sdk, operator -> api, kube, queue;  worker -> queue -> ioredis;  api -> kube (types only)
//
// Run alone: npx depcruise --config .dependency-cruiser.cjs api kube queue worker operator sdk cli localcluster examples bench hack test
const PRODUCT = '^(api|kube|queue|worker|operator|sdk|cli)/';

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'operator-is-private',
      severity: 'error',
      comment:
        'README: nothing imports operator/ but its own entry point and the tests (test/, bench/, hack/). Move what you need into api/ (what a spec means) or kube/ (the Kubernetes client) and import it from there.',
      from: { pathNot: '^(operator|test|bench|hack)/' },
      to: { path: '^operator/' },
    },
    {
      name: 'operator-not-worker',
      severity: 'error',
      comment: 'README: the operator never imports the worker. Shared spec meaning belongs in api/, queue access in queue/.',
      from: { path: '^operator/' },
      to: { path: '^worker/' },
    },
    {
      name: 'worker-only-queue',
      severity: 'error',
      comment: 'README: worker -> queue -> ioredis. The worker imports queue/ only (never the operator, api/, kube/, sdk/, cli/ or localcluster/): it runs in pods with no Kubernetes access.',
      from: { path: '^worker/' },
      to: { path: '^(api|kube|operator|sdk|cli|localcluster)/' },
    },
    {
      name: 'queue-imports-none',
      severity: 'error',
      comment: 'README: queue/ is the bottom layer (queue -> ioredis): it imports none of api/, kube/, worker/, operator/, sdk/, cli/, localcluster/.',
      from: { path: '^queue/' },
      to: { path: '^(api|kube|worker|operator|sdk|cli|localcluster)/' },
    },
    {
      name: 'kube-imports-none',
      severity: 'error',
      comment: "README: kube/ (the REST client, Pod types, the finalizer helper) is imported by cli, sdk, operator and api; it imports none of the project's other folders.",
      from: { path: '^kube/' },
      to: { path: '^(api|queue|worker|operator|sdk|cli|localcluster)/' },
    },
    {
      name: 'api-types-only',
      severity: 'error',
      comment:
        "README: api -> kube (types only). api/ owns what a spec means and imports only types from kube/ (and queue/'s item types), so the SDK and CLI can use it without the operator's runtime. Use `import type`.",
      from: { path: '^api/' },
      to: { path: '^(kube|queue)/', dependencyTypesNot: ['type-only'] },
    },
    {
      name: 'api-imports-only-kube-queue',
      severity: 'error',
      comment: 'README: cli, sdk, operator -> api, and api -> kube (types only): api/ never imports worker/, operator/, sdk/, cli/ or localcluster/.',
      from: { path: '^api/' },
      to: { path: '^(worker|operator|sdk|cli|localcluster)/' },
    },
    {
      name: 'sdk-cli-not-operator',
      severity: 'error',
      comment: 'README: cli, sdk -> api, kube, queue; the SDK and CLI reach Kubernetes through kube/. They never import operator/ or localcluster/ (the local cluster is test and demo tooling).',
      from: { path: '^(sdk|cli)/' },
      to: { path: '^(operator|localcluster)/' },
    },
    {
      name: 'sdk-worker-types-only',
      severity: 'error',
      comment: "README: sdk -> api, kube, queue. The SDK may name the handler API's types (worker/handler/api.ts) but loads none of the worker's code: use `import type`.",
      from: { path: '^sdk/' },
      to: { path: '^worker/', dependencyTypesNot: ['type-only'] },
    },
    {
      name: 'product-not-tooling',
      severity: 'error',
      comment: 'The shipped code (api, kube, queue, worker, operator, sdk, cli) never imports localcluster/, test/, bench/, hack/ or examples/: those are not in the images or the package.',
      from: { path: PRODUCT },
      to: { path: '^(localcluster|test|bench|hack|examples)/' },
    },
    {
      name: 'localcluster-standalone',
      severity: 'error',
      comment: 'localcluster/ (a local control plane and node for tests and the demo) depends on none of the product, so it can run any build of it.',
      from: { path: '^localcluster/' },
      to: { path: `${PRODUCT}|^(test|bench|hack|examples)/` },
    },
    {
      name: 'no-circular',
      severity: 'error',
      comment: 'Modules import each other in a cycle: load order then depends on which one is imported first. Move the shared part into a third module.',
      from: {},
      to: { circular: true },
    },
    {
      name: 'not-to-unresolvable',
      severity: 'error',
      comment: 'An import that resolves to no file (a typo, or a module that was moved): fix the path.',
      from: {},
      to: { couldNotResolve: true },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^(dist|node_modules|charts)/' },
    // Imports are written with .js (nodenext); the resolver maps them to the .ts sources.
    tsConfig: { fileName: 'tsconfig.json' },
    tsPreCompilationDeps: true,
    enhancedResolveOptions: { extensions: ['.ts', '.cts', '.mts', '.js', '.mjs', '.cjs', '.json'] },
    skipAnalysisNotInRules: true,
  },
};
