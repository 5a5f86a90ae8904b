// The OpenAI-compatible front (/openai/v1/...): the openai engineer's file.
// Until it lands, every /openai/ route answers 404 in OpenAI's error shape,
// so the SDKs raise NotFoundError.
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { GatewayDeps } from './listener.js'

export async function handleOpenAI(req: IncomingMessage, res: ServerResponse, _deps: GatewayDeps): Promise<void> {
  const body = JSON.stringify({
    error: {
      message: `no route ${req.method} ${req.url?.split('?')[0]}`,
      type: 'invalid_request_error',
      code: 'not_found'
    }
  })
  res.writeHead(404, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
  res.end(body)
}
