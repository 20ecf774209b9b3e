/** Files shown in the page: fetched with the bearer token, kept as blob: URLs (allowed by the CSP). */

import type { Api } from "./api.js";

export class Media {
  private readonly urls = new Map<string, Promise<{ url: string; name: string }>>();

  constructor(private readonly rest: Api) {}

  /** The blob URL of a file and its name, fetched at most once per page. */
  get(fileId: string): Promise<{ url: string; name: string }> {
    let found = this.urls.get(fileId);
    if (found === undefined) {
      found = this.rest.fileBlob(fileId).then(({ blob, name }) => ({ url: URL.createObjectURL(blob), name }));
      found.catch(() => this.urls.delete(fileId));  // try again on the next render
      this.urls.set(fileId, found);
    }
    return found;
  }

  /** Save a file through a temporary link. */
  async download(fileId: string): Promise<void> {
    const { url, name } = await this.get(fileId);
    const link = document.createElement("a");
    link.href = url;
    link.download = name;
    document.body.append(link);
    link.click();
    link.remove();
  }
}
