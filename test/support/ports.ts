export { freePort } from '../../localcluster/ports.js';
