// Prometheus metrics, all prefixed gpumesh_. Cluster gauges are read from
// PostgreSQL when scraped, so every replica reports the same truth.
import client from 'prom-client'
import type { Pool } from './store/db.js'
import { registerGpuMetrics } from './telemetry/gpu-metrics.js'
import type { LiveTelemetry } from './telemetry/live-gpus.js'

export interface Metrics {
  registry: client.Registry
  httpRequests: client.Counter<'method' | 'route' | 'status'>
  httpDuration: client.Histogram<'method' | 'route'>
  schedulerDecisions: client.Counter<'result'>
  schedulerPass: client.Histogram
  leader: client.Gauge
  eventsRelayed: client.Counter
  redisUp: client.Gauge
  gatewayRequests: client.Counter<'endpoint' | 'code'>
  gatewayDuration: client.Histogram<'endpoint'>
  gatewayInFlight: client.Gauge<'endpoint' | 'placement'>
  gatewayAuth: client.Histogram
}

/** `sessions`: agents connected to this coordinator now; `gpus`: their GPU tables (per-GPU series, DCGM names). */
export function createMetrics(pool: Pool, sessions: () => number = () => 0, gpus: LiveTelemetry = () => []): Metrics {
  const registry = new client.Registry()
  client.collectDefaultMetrics({ register: registry, prefix: 'gpumesh_' })
  // prom-client names three gauges *_total, a suffix Prometheus keeps for
  // counters (promtool check metrics refuses them); each is the sum of the
  // by-type gauge beside it (gpumesh_nodejs_active_handles{type}, ...).
  for (const kind of ['handles', 'requests', 'resources'])
    registry.removeSingleMetric(`gpumesh_nodejs_active_${kind}_total`)
  const m: Metrics = {
    registry,
    httpRequests: new client.Counter({
      name: 'gpumesh_http_requests_total',
      help: 'Admin API requests',
      labelNames: ['method', 'route', 'status'],
      registers: [registry]
    }),
    httpDuration: new client.Histogram({
      name: 'gpumesh_http_request_duration_seconds',
      help: 'Admin API request latency',
      labelNames: ['method', 'route'],
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5],
      registers: [registry]
    }),
    schedulerDecisions: new client.Counter({
      name: 'gpumesh_scheduler_decisions_total',
      help: 'Scheduling decisions by result (placed, partial, pending)',
      labelNames: ['result'],
      registers: [registry]
    }),
    schedulerPass: new client.Histogram({
      name: 'gpumesh_scheduler_pass_duration_seconds',
      help: 'One scheduling pass: snapshot, decide, persist',
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers: [registry]
    }),
    leader: new client.Gauge({
      name: 'gpumesh_leader',
      help: '1 when this coordinator holds the scheduler lock',
      registers: [registry]
    }),
    eventsRelayed: new client.Counter({
      name: 'gpumesh_events_relayed_total',
      help: 'Outbox events published to the Redis stream',
      registers: [registry]
    }),
    redisUp: new client.Gauge({
      name: 'gpumesh_redis_up',
      help: '1 when the last Redis command succeeded',
      registers: [registry]
    }),
    gatewayRequests: new client.Counter({
      name: 'gpumesh_gateway_requests_total',
      help: 'Calls through the gateway by endpoint and response status (an unknown endpoint counts as "")',
      labelNames: ['endpoint', 'code'],
      registers: [registry]
    }),
    gatewayDuration: new client.Histogram({
      name: 'gpumesh_gateway_request_duration_seconds',
      help: 'Calls through the gateway, from the request to the end of the response (streams included)',
      labelNames: ['endpoint'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
      registers: [registry]
    }),
    gatewayInFlight: new client.Gauge({
      name: 'gpumesh_gateway_in_flight',
      help: 'Calls in flight through this coordinator, per endpoint replica',
      labelNames: ['endpoint', 'placement'],
      registers: [registry]
    }),
    gatewayAuth: new client.Histogram({
      name: 'gpumesh_gateway_auth_check_duration_seconds',
      help: "The gateway's per-call token check in PostgreSQL",
      buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1],
      registers: [registry]
    })
  }
  new client.Gauge({
    name: 'gpumesh_agent_sessions',
    help: 'Agents with a control session on this coordinator',
    registers: [registry],
    collect() {
      this.set(sessions())
    }
  })
  new client.Gauge({
    name: 'gpumesh_hosts',
    help: 'Hosts by state',
    labelNames: ['state'],
    registers: [registry],
    async collect() {
      const { rows } = await pool.query<{ state: string; n: number }>(
        'select state, count(*)::int as n from hosts where revoked_at is null group by state'
      )
      this.reset()
      for (const r of rows) this.set({ state: r.state }, r.n)
    }
  })
  new client.Gauge({
    name: 'gpumesh_gpus',
    help: 'GPUs by pool and allocation',
    labelNames: ['pool', 'allocation'],
    registers: [registry],
    async collect() {
      const { rows } = await pool.query<{ pool: string; total: number; allocated: number }>(
        `select h.pool_key as pool, sum(h.gpu_count)::int as total,
           (select count(*) from gpu_allocations a join hosts x on x.id = a.host_id where a.active and x.pool_key = h.pool_key)::int as allocated
         from hosts h where h.revoked_at is null group by h.pool_key`
      )
      this.reset()
      for (const r of rows) {
        this.set({ pool: r.pool, allocation: 'allocated' }, r.allocated)
        this.set({ pool: r.pool, allocation: 'free' }, r.total - r.allocated)
      }
    }
  })
  new client.Gauge({
    name: 'gpumesh_workloads',
    help: 'Workloads by state',
    labelNames: ['state'],
    registers: [registry],
    async collect() {
      const { rows } = await pool.query<{ state: string; n: number }>(
        "select state, count(*)::int as n from workloads where state <> 'deleted' group by state"
      )
      this.reset()
      for (const r of rows) this.set({ state: r.state }, r.n)
    }
  })
  registerGpuMetrics(registry, pool, gpus)
  return m
}
