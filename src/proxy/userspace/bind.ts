// What the TCP and UDP sides of a service port share: binding as a promise (the first error
// rejects, the bound port resolves; 0 asked means the kernel picked it), error logging, and
// the metrics hook that moves their pending counts into the registry on scrape.
import type { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import type { UserspaceMetrics } from './metrics.ts';

export interface ListenerBaseOptions {
  /** Service port name ("ns/name:port"), the metrics label. */
  name: string;
  /** null: counted nowhere (the forwarder side counts for itself, forwarders.ts). */
  metrics: UserspaceMetrics | null;
  log: Logger;
  bindHost: string;
  /** 0 or absent: the kernel picks a free port. */
  port?: number;
}

export abstract class ListenerBase {
  private listening = 0;
  private readonly stopCollect: () => unknown;

  constructor(private readonly base: ListenerBaseOptions, what: string, e: EventEmitter) {
    e.on('error', (err) => base.log.error({ service: base.name, err: String(err) }, `${what} error`));
    this.stopCollect = base.metrics ? base.metrics.onCollect(() => this.flush()) : () => {};
  }

  get port(): number {
    return this.listening;
  }

  protected abstract flush(): void;

  protected async bound(e: EventEmitter, start: (onBound: () => void) => void, port: () => number): Promise<number> {
    this.listening = await new Promise<number>((resolve, reject) => {
      e.once('error', reject);
      start(() => {
        e.off('error', reject);
        resolve(port());
      });
    });
    return this.listening;
  }

  /** Final count into the metrics; no more collection. */
  protected detach(): void {
    this.flush();
    this.stopCollect();
  }
}
