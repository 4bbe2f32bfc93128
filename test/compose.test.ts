// docker-compose.yml: the services, images, environment and volumes a cluster deployment
// relies on, and `docker compose config -q` where the compose plugin is installed.
import { expect } from 'chai';
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { repoRoot } from '../data/paths.js';

interface Service {
  image?: string;
  build?: { context: string; target?: string };
  command?: string[];
  environment?: Record<string, string>;
  volumes?: string[];
  ports?: string[];
  depends_on?: Record<string, unknown> | string[];
  profiles?: string[];
  stop_grace_period?: string;
  deploy?: { resources?: { reservations?: { devices?: { driver: string; count: number; capabilities: string[] }[] } } };
}

/** A compose / Go duration ("2m", "90s", "1m30s", "500ms") in seconds. */
function seconds(duration: string): number {
  const units: Record<string, number> = { h: 3600, m: 60, s: 1, ms: 0.001 };
  const parts = [...duration.matchAll(/(\d+(?:\.\d+)?)(ms|h|m|s)/g)];
  if (parts.length === 0 || parts.map((p) => p[0]).join('') !== duration) throw new Error(`not a duration: ${duration}`);
  return parts.reduce((sum, p) => sum + Number(p[1]) * units[p[2]], 0);
}

describe('docker-compose.yml', function () {
  const file = join(repoRoot, 'docker-compose.yml');
  const compose = parse(readFileSync(file, 'utf8'), { merge: true }) as {
    services: Record<string, Service>;
    volumes: Record<string, unknown>;
  };
  const s = compose.services;

  it('has the Temporal server on PostgreSQL, the UI, a CPU and a GPU worker', function () {
    expect(Object.keys(s)).to.include.members(['postgresql', 'temporal', 'temporal-ui', 'worker-cpu', 'worker-gpu']);
    expect(s.postgresql.image).to.match(/^postgres:/);
    expect(s.temporal.image).to.match(/^temporalio\/auto-setup:\d/);
    expect(s.temporal.environment).to.include({ DB: 'postgres12', POSTGRES_SEEDS: 'postgresql' });
    expect(s['temporal-ui'].image).to.match(/^temporalio\/ui:\d/);
    expect(s['temporal-ui'].environment?.TEMPORAL_ADDRESS).to.equal('temporal:7233');
  });

  it('runs each worker on its own task queue against the cluster', function () {
    expect(s['worker-cpu'].command).to.deep.equal(['worker', '--queue', 'audit-cpu', '--concurrency', '2']);
    expect(s['worker-gpu'].command).to.deep.equal(['worker', '--queue', 'audit-gpu']);
    expect(s['worker-cpu'].build?.target).to.equal('cpu');
    expect(s['worker-gpu'].build?.target).to.equal('gpu');
    for (const w of ['worker-cpu', 'worker-gpu']) {
      expect(s[w].environment?.TEMPORAL_ADDRESS, w).to.equal('temporal:7233');
      expect(s[w].environment?.BACKDOOR_AUDIT_STORE, w).to.equal('/artifacts');
    }
    const gpu = s['worker-gpu'].deploy?.resources?.reservations?.devices?.[0];
    expect(gpu).to.deep.include({ driver: 'nvidia' });
    expect(gpu?.capabilities).to.include('gpu');
  });

  it('gives each worker a stop grace period that outlasts its shutdownGraceTime and one more batch', function () {
    // Docker SIGKILLs after stop_grace_period (default 10 s). The worker lets running stages go on
    // for shutdownGraceTime, then cancels them and they stop at their next batch; the container
    // must live through both, or a stage dies mid-way and waits for its heartbeat timeout.
    const workerSource = readFileSync(join(repoRoot, 'worker', 'index.ts'), 'utf8');
    const grace = workerSource.match(/shutdownGraceTime:\s*'([^']+)'/)?.[1];
    expect(grace, 'shutdownGraceTime in worker/index.ts').to.be.a('string');
    const batchAndExitS = 60; // one CPU training batch (~20 s) + a checkpoint write + reporting, with room
    for (const w of ['worker-cpu', 'worker-gpu']) {
      const stop = s[w].stop_grace_period;
      expect(stop, `${w} stop_grace_period`).to.be.a('string');
      expect(seconds(stop!), w).to.be.at.least(seconds(grace!) + batchAndExitS);
    }
  });

  it('passes the payload encryption keys to every worker and the CLI', function () {
    for (const w of ['worker-cpu', 'worker-gpu', 'cli']) {
      expect(s[w].environment, w).to.have.property('BACKDOOR_AUDIT_PAYLOAD_KEY', '${BACKDOOR_AUDIT_PAYLOAD_KEY:-}');
      expect(s[w].environment, w).to.have.property('BACKDOOR_AUDIT_PAYLOAD_KEYS', '${BACKDOOR_AUDIT_PAYLOAD_KEYS:-}');
    }
  });

  it('shares the artifact store between the workers through a named volume', function () {
    for (const w of ['worker-cpu', 'worker-gpu', 'cli']) expect(s[w].volumes, w).to.include('artifacts:/artifacts');
    expect(compose.volumes).to.have.property('artifacts');
    expect(compose.volumes).to.have.property('temporal-db');
    expect(s.postgresql.volumes).to.include('temporal-db:/var/lib/postgresql/data');
  });

  it('publishes ports on loopback only', function () {
    for (const [name, svc] of Object.entries(s)) for (const p of svc.ports ?? []) expect(p, name).to.match(/^127\.0\.0\.1:/);
  });

  it('is accepted by `docker compose config -q` (when the compose plugin is installed)', function () {
    const probe = spawnSync('docker', ['compose', 'version'], { encoding: 'utf8' });
    if (probe.status !== 0) {
      console.log('      skipped: the docker compose plugin is absent here (the structure is checked by the tests above)');
      this.skip();
    }
    execFileSync('docker', ['compose', '-f', file, 'config', '-q'], { cwd: repoRoot, stdio: 'pipe' });
  });
});
