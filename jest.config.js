// Tests run from the compiled JS in dist/ (the test command runs `tsc -b` first), so
// tests, worker threads and spawned processes all execute the same files production
// does; no transform is needed and ESM works natively (--experimental-vm-modules).
const common = {
  rootDir: '.',
  transform: {},
  testEnvironment: 'node',
  moduleFileExtensions: ['js', 'json'],
  testPathIgnorePatterns: ['/node_modules/'],
};

export default {
  // Jest 30 applies testTimeout only globally, not per project. Cluster tests start real
  // control planes and wait for batches; unit tests finish in milliseconds either way.
  testTimeout: 300_000,
  projects: [
    { ...common, displayName: 'unit', testMatch: ['<rootDir>/dist/test/unit/**/*.test.js'] },
    { ...common, displayName: 'integration', testMatch: ['<rootDir>/dist/test/integration/**/*.test.js'] },
    { ...common, displayName: 'cluster', testMatch: ['<rootDir>/dist/test/cluster/**/*.test.js'] },
    // A real kubelet + containerd node, the built images, the chart: hack/test.sh runs it last, alone.
    { ...common, displayName: 'e2e', testMatch: ['<rootDir>/dist/test/e2e/**/*.test.js'] },
  ],
};
