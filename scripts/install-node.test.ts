// The install script's dry run: it changes nothing, says so, and writes a unit whose
// ExecStart uses systemd's quoting for arguments with spaces, quotes, % and $.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const script = fileURLToPath(new URL('./install-node.sh', import.meta.url));

describe('install-node.sh --dry-run', () => {
  it('prints the unit with systemd-quoted arguments and says nothing was changed', () => {
    const existed = existsSync('/etc/systemd/system/hivemesh.service');
    const output = execFileSync('bash', [script, '--dry-run', '--name', 'gpu box "2" 100% $HOME'], { encoding: 'utf8' });
    expect(output).toContain('ExecStart=/opt/hivemesh/bin/hivemesh start "--name" "gpu box \\"2\\" 100%% $$HOME"');
    expect(output).toMatch(/dry run: nothing was changed/);
    expect(output).not.toMatch(/is installed and running/);
    expect(existsSync('/etc/systemd/system/hivemesh.service')).toBe(existed);
  });
});
