// ES-module entry of the npm package: loads the classic script and re-exports it.
import './paygate.js';

const Paygate = globalThis.Paygate;
export const { PaygateError } = Paygate;
export default Paygate;
