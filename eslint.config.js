// Lint rules. Beyond the recommended sets, this keeps the pure core pure: nothing under
// scheduler/ or protocol/ may reach for the network, the disk, timers, the wall clock or
// unseeded randomness (ARCHITECTURE.md: time arrives as tick(), messages as step()).
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import globals from 'globals';

const impureModules = ['fs', 'net', 'dgram', 'http', 'https', 'child_process', 'timers', 'os', 'worker_threads', 'cluster'];

export default tseslint.config(
  { ignores: ['node_modules/**', 'web-ui/static/vendor/**', 'coverage/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.cjs'],
    languageOptions: { sourceType: 'commonjs', globals: globals.node },
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },
  {
    files: ['web-ui/**/*.js'],
    languageOptions: { globals: globals.browser },
  },
  {
    files: ['**/*.js', '**/*.mjs'],
    ignores: ['web-ui/**'],
    languageOptions: { globals: globals.node },
  },
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-imports': 'error',
      'no-constant-condition': ['error', { checkLoops: false }],
    },
  },
  {
    files: ['scheduler/**/*.ts', 'protocol/**/*.ts'],
    ignores: ['**/*.test.ts', 'scheduler/sim/**'],
    rules: {
      'no-restricted-imports': ['error', {
        paths: impureModules.flatMap((name) => [
          { name, message: 'The pure core does no I/O; do it in daemon/.' },
          { name: `node:${name}`, message: 'The pure core does no I/O; do it in daemon/.' },
        ]),
        patterns: [{ group: ['**/daemon/**'], message: 'Imports point down only: daemon -> scheduler -> protocol.' }],
      }],
      'no-restricted-globals': ['error',
        { name: 'setTimeout', message: 'Time arrives as tick() in the pure core.' },
        { name: 'setInterval', message: 'Time arrives as tick() in the pure core.' },
        { name: 'performance', message: 'Time arrives as tick() in the pure core.' },
      ],
      'no-restricted-syntax': ['error',
        { selector: "CallExpression[callee.object.name='Date'][callee.property.name='now']", message: 'No wall clock in the pure core.' },
        { selector: "NewExpression[callee.name='Date'][arguments.length=0]", message: 'No wall clock in the pure core.' },
        { selector: "CallExpression[callee.object.name='Math'][callee.property.name='random']", message: 'Use the seeded random source passed in.' },
      ],
    },
  },
  {
    files: ['protocol/**/*.ts'],
    ignores: ['**/*.test.ts'],
    rules: {
      'no-restricted-imports': ['error', {
        patterns: [{ group: ['**/daemon/**', '**/scheduler/**'], message: 'protocol/ is the bottom layer.' }],
        paths: impureModules.map((name) => ({ name: `node:${name}`, message: 'The pure core does no I/O.' })),
      }],
    },
  },
);
