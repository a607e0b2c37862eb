// Entry point: start the application once the page is parsed.

import { App } from "./app";

const app = new App();
app.start();
