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
  projects: [
    { ...common, displayName: 'unit', testMatch: ['<rootDir>/dist/test/unit/**/*.test.js'] },
    { ...common, displayName: 'integration', testMatch: ['<rootDir>/dist/test/integration/**/*.test.js'], testTimeout: 60000 },
    { ...common, displayName: 'cluster', testMatch: ['<rootDir>/dist/test/cluster/**/*.test.js'], testTimeout: 300000 },
  ],
};
