// Library entry (`toastnet`): the API client and every type orchestrators need, the same as
// `toastnet/client` (src/client.ts), which is where they are listed.
export * from './client.js';
