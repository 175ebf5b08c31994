// Model names as Ollama reads them: a missing tag is `:latest`, a registry's port is no tag,
// and the case does not matter (Ollama resolves `Llama3.2:1B` to an installed `llama3.2:1b`).
import { describe, expect, it } from 'vitest';
import { expectedTokensPerSecond, hasModel, installedNameOf, modelKey, normalizeModelName, sameModel, type NodeView } from './node-view.ts';

describe('model names', () => {
  it('adds the :latest tag a name leaves out, and takes a registry port for no tag', () => {
    expect(normalizeModelName('llama3')).toBe('llama3:latest');
    expect(normalizeModelName('llama3:8b')).toBe('llama3:8b');
    expect(normalizeModelName('registry.local:5000/team/coder')).toBe('registry.local:5000/team/coder:latest');
    expect(normalizeModelName('registry.local:5000/team/coder:7b')).toBe('registry.local:5000/team/coder:7b');
    // The spelling shown stays as written.
    expect(normalizeModelName('MyModel')).toBe('MyModel:latest');
  });

  it('compares names in any case, with or without :latest', () => {
    expect(sameModel('Llama3.2:1B', 'llama3.2:1b')).toBe(true);
    expect(sameModel('LLAMA3', 'llama3:latest')).toBe(true);
    expect(sameModel('llama3', 'llama3:8b')).toBe(false);
    expect(modelKey('Qwen2.5:7B')).toBe('qwen2.5:7b');
    expect(hasModel(['llama3.2:1b', 'qwen2.5:7b'], 'Qwen2.5:7B')).toBe(true);
  });

  it('finds the installed spelling of a name, or keeps the name when nothing matches', () => {
    expect(installedNameOf([{ name: 'llama3.2:1b' }, { name: 'MyModel:latest' }], 'mymodel')).toBe('MyModel:latest');
    expect(installedNameOf(['llama3.2:1b'], 'LLAMA3.2:1B')).toBe('llama3.2:1b');
    expect(installedNameOf(['llama3.2:1b'], 'absent:1b')).toBe('absent:1b');
  });

  it('finds a node\'s speed and model size whatever the case the task uses', () => {
    const node: NodeView = {
      id: 'n', alive: true, modelsInstalled: ['llama3.2:1b', 'qwen2.5:7b'], modelsLoaded: [], running: 0, concurrencyLimit: 2, agents: [],
      tokensPerSecond: { 'llama3.2:1b': 120 }, modelSizeBytes: { [modelKey('llama3.2:1b')]: 1e9, [modelKey('qwen2.5:7b')]: 4e9 },
    };
    expect(expectedTokensPerSecond(node, 'Llama3.2:1B')).toBe(120);
    // Unmeasured: scaled from the measured model by size (four times the size, a quarter the speed).
    expect(expectedTokensPerSecond(node, 'QWEN2.5:7B')).toBe(30);
  });
});
