// Entry point that build.mjs bundles into build/clients.mjs: both client versions, unmodified.
export { Client as ClientV3 } from '@localfirst/relay-client'
export { Client as ClientV4 } from '@localfirst/relay/Client.js'
