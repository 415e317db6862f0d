import type { ClusterState } from '../model/k8s.ts';
import type { ProxySettings, RenderResult } from './types.ts';
export function explainRules(_c: ClusterState, _s: ProxySettings, r: RenderResult): string { return r.text; }
